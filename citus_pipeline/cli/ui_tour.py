"""The Dagster UI as a user sees it: the webserver on an instance, pages opened in Chromium.

`serve` starts `dagster-webserver` on a Dagster instance directory; `capture` opens each page
of :data:`PAGES` in Debian's Chromium through Playwright (no browser download: Playwright
drives the executable the system has), waits until the page shows what it must show, and
saves a screenshot. `citus-pipeline pipeline screenshots` refreshes the README's pictures
this way, and the tests hold that every page shows its content.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .. import settings
from ..errors import UserError, WaitTimeout
from ..waiting import until

CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that would reach for the network (this machine has none).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCATION = "citus_pipeline"


@dataclass(frozen=True)
class Page:
    name: str  # the screenshot's file name, without .png
    path: str
    shows: str  # text the page must show once loaded
    click: str | None = None  # a button to press first (e.g. the metadata plots)


PAGES = (
    Page(
        "asset-graph", f"/locations/{LOCATION}/asset-groups/uk_price/lineage", "uk_price_rebalanced"
    ),
    Page("uk_price_raw-metadata-plots", "/assets/uk_price_raw", "rows_loaded", click="Plots"),
    Page("uk_price-checks", "/assets/uk_price?view=checks", "query_timing"),
    Page(
        "cluster-health-checks", "/assets/citus_cluster?view=checks", "pg_dist_node_follows_leaders"
    ),
    Page(
        "new_workers_sensor",
        f"/locations/{LOCATION}/sensors/new_workers_sensor",
        "new_workers_sensor",
    ),
    Page(
        "monthly_update_schedule",
        f"/locations/{LOCATION}/schedules/monthly_update_schedule",
        "monthly_update_schedule",
    ),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    dagster_home: Path,
    log: Path,
    port: int | None = None,
    timeout: float = 120,
    daemon: bool = False,
) -> Iterator[str]:
    """``dagster-webserver`` on ``dagster_home`` at 127.0.0.1 (with ``daemon``: ``dagster dev``,
    the webserver and the daemon, so sensors and schedules tick); yields its base URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "dagster"), "dev"] if daemon else [str(bindir / "dagster-webserver")]
    workspace = settings.REPO_ROOT / "workspace.yaml"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*cmd, "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=settings.REPO_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                raise UserError(f"dagster-webserver exited with code {proc.returncode}", log)
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200

        try:
            until(answers, timeout, 0.5, "dagster-webserver", ignore=(httpx.HTTPError,))
        except WaitTimeout as err:
            raise UserError(f"dagster-webserver did not answer in {timeout:.0f} s", log) from err
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def capture(base_url: str, out_dir: Path, pages: tuple[Page, ...] = PAGES) -> list[Path]:
    """A screenshot of each page once it shows what it must; raises naming a page that doesn't."""
    try:
        from playwright.sync_api import TimeoutError as PageTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError(
            "playwright is not installed (uv sync installs it with the dev group)"
        ) from None
    if not Path(CHROMIUM).exists():
        raise UserError(
            f"{CHROMIUM} not found: install Debian's chromium (scripts/bootstrap.sh --dev)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base_url}/overview", wait_until="networkidle")
            with contextlib.suppress(PageTimeout):  # the first visit's newsletter dialog
                page.get_by_role("button", name="Skip").click(timeout=5000)
            for spec in pages:
                page.goto(base_url + spec.path, wait_until="networkidle")
                try:
                    if spec.click:
                        page.get_by_role("button", name=spec.click).first.click(timeout=20000)
                    page.get_by_text(spec.shows).first.wait_for(timeout=20000)
                except PageTimeout:
                    raise UserError(f"{spec.path}: the page never showed {spec.shows!r}") from None
                page.wait_for_timeout(1500)  # plots and the graph lay themselves out
                shot = out_dir / f"{spec.name}.png"
                page.screenshot(path=str(shot))
                shots.append(shot)
        finally:
            browser.close()
    return shots


__all__ = ["CHROMIUM", "PAGES", "Page", "capture", "free_port", "serve"]
