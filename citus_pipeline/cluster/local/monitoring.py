"""Metrics of a local cluster: one postgres exporter per member and one Prometheus scraping them.

Debian's ``prometheus-postgres-exporter`` and ``prometheus`` run as the same unprivileged user
as Patroni, under ``<state dir>/metrics``. Prometheus finds its targets in file_sd files
rendered from the members (rewritten when a worker group is added or removed, which it picks
up without a restart): Patroni's ``/metrics`` and the exporters, plus etcd's own. Where the
spec has a pooler, one more exporter reads PgBouncer's admin console (PyPI's
``prometheus-pgbouncer-exporter``, which ``scripts/bootstrap.sh --dev`` installs in a venv) in
the host's network namespace, where PgBouncer listens. The exporters connect as the superuser
through a passfile only their user can read: that user owns the data directories already, so
the password gives it nothing it does not have.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from ...errors import ClusterError
from ..metrics import (
    EXPORTER_ARGS,
    POOLER_EXPORTER_COMMAND,
    alert_rules,
    exporter_queries_yaml,
    pooler_exporter_argv,
    pooler_exporter_config,
)
from .credentials import write_private
from .layout import Layout, Member
from .netns import MemberNetwork
from .processes import Daemon, port_free, stop_all

EXPORTER = "prometheus-postgres-exporter"
PROMETHEUS = "prometheus"
POOLER_EXPORTER = POOLER_EXPORTER_COMMAND  # also its process's name here
POOLER_EXPORTER_CONFIG = "pgbouncer-exporter.yml"


def missing_tools(pooler: bool = True) -> list[str]:
    """The tools of the metrics stack that are not installed (the pooler's exporter only
    where a pooler runs)."""
    tools = (EXPORTER, PROMETHEUS, POOLER_EXPORTER) if pooler else (EXPORTER, PROMETHEUS)
    return [t for t in tools if not shutil.which(t)]


class Monitoring:
    """The exporters and the Prometheus of one state directory."""

    def __init__(
        self, layout: Layout, owner: pwd.struct_passwd | None, network: MemberNetwork
    ) -> None:
        self.layout = layout
        self.spec = layout.spec
        self.owner = owner
        self.network = network
        self.dir = layout.metrics_dir

    # ---- where things are -------------------------------------------------------------
    @property
    def prometheus_url(self) -> str:
        return f"http://{self.spec.prometheus_address}:{self.spec.local.prometheus_port}"

    def exporter_address(self, m: Member) -> str:
        return f"{m.address}:{self.spec.local.exporter_port}"

    @property
    def pooler_exporter_address(self) -> str:
        return f"{self.spec.pooler_address}:{self.spec.local.pooler_exporter_port}"

    def log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def _process(self, name: str) -> Daemon:
        # every process started here names a file of this directory on its command line
        return Daemon(name, self.layout.metrics_pidfile(name), str(self.dir), self.log(name))

    def _pid(self, name: str) -> int | None:
        return self._process(name).pid()

    def _pid_names(self, prefix: str = "") -> list[str]:
        """The processes with a pidfile here (running or not), by name."""
        return [p.stem for p in self.layout.metrics_pid_dir.glob(f"{prefix}*.pid")]

    def exporter_pid(self, m: Member) -> int | None:
        return self._pid(f"exporter-{m.name}")

    def pooler_exporter_pid(self) -> int | None:
        return self._pid(POOLER_EXPORTER)

    def prometheus_pid(self) -> int | None:
        return self._pid(PROMETHEUS)

    def running(self) -> bool:
        return self.prometheus_pid() is not None

    # ---- configuration ----------------------------------------------------------------
    def _write(self, path: Path, text: str, private: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if private:
            write_private(path, text, self.owner)
            return
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        tmp.replace(path)  # Prometheus re-reads file_sd files whole: never half-written

    def _targets(self, members: list[Member]) -> dict[str, list[dict[str, Any]]]:
        def target(address: str, m: Member) -> dict[str, Any]:
            return {
                "targets": [address],
                "labels": {"member": m.name, "citus_group": str(m.group)},
            }

        return {
            "patroni": [target(f"{m.address}:{m.api_port}", m) for m in members],
            "postgres": [target(self.exporter_address(m), m) for m in members],
        }

    def prometheus_config(self) -> dict[str, Any]:
        s = self.spec
        every = f"{s.metrics.scrape_interval}s"

        def file_sd(job: str) -> dict[str, Any]:
            return {
                "job_name": job,
                "file_sd_configs": [{"files": [str(self.dir / "targets" / f"{job}.json")]}],
            }

        patroni = file_sd("patroni")
        if self.layout.ca_file:  # Patroni's REST API (and /metrics) on HTTPS
            patroni.update(scheme="https", tls_config={"ca_file": str(self.layout.ca_file)})
        pooler = {
            "job_name": "pgbouncer",
            "static_configs": [
                {
                    "targets": [self.pooler_exporter_address],
                    # the name its certificate has; a pod's name on Kubernetes
                    "labels": {"pooler": f"{s.name}-pooler"},
                }
            ],
        }
        return {
            "global": {
                "scrape_interval": every,
                "evaluation_interval": every,
                "external_labels": {"cluster": s.name},
            },
            "rule_files": [str(self.dir / "rules.yml")],
            "scrape_configs": [
                patroni,
                file_sd("postgres"),
                {
                    "job_name": "etcd",
                    "static_configs": [
                        {"targets": [f"{s.etcd_address}:{s.local.etcd_client_port}"]}
                    ],
                },
                *([pooler] if s.pooler.enabled else []),
            ],
        }

    def write_config(self, members: list[Member], superuser_password: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for sub in ("pids", "logs", "targets", "prometheus-data"):
            d = self.dir / sub
            d.mkdir(exist_ok=True)
            if self.owner:
                os.chown(d, self.owner.pw_uid, self.owner.pw_gid)
        user = self.spec.credentials.superuser
        self._write(self.dir / "pgpass", f"*:*:*:{user}:{superuser_password}\n", private=True)
        self._write(self.dir / "queries.yaml", exporter_queries_yaml())
        if self.spec.pooler.enabled:
            # no password in it: the exporter's libpq reads the passfile above (PGPASSFILE)
            text = pooler_exporter_config(
                self.spec,
                listen_host=str(self.spec.pooler_address),
                listen_port=self.spec.local.pooler_exporter_port,
                pooler_host=str(self.spec.pooler_address),
                tls=self._sslmode,
            )
            self._write(self.dir / POOLER_EXPORTER_CONFIG, text)
        self._write(self.dir / "rules.yml", yaml.safe_dump(alert_rules(self.spec), sort_keys=False))
        self._write(
            self.dir / "prometheus.yml", yaml.safe_dump(self.prometheus_config(), sort_keys=False)
        )
        self.write_targets(members)

    def write_targets(self, members: list[Member]) -> None:
        for job, groups in self._targets(members).items():
            self._write(self.dir / "targets" / f"{job}.json", json.dumps(groups, indent=2))

    # ---- processes --------------------------------------------------------------------
    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str], member: Member | None = None
    ) -> subprocess.Popen:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}
        # a member's exporter listens on the member's address: in its namespace, where it has one
        netns = self.network.netns_file(member) if member is not None else None
        return self._process(name).spawn(
            cmd, cwd=self.dir, env={**base, **env}, owner=self.owner, netns=netns
        )

    def _check_port(self, address: str, what: str, field: str) -> None:
        host, port = address.rsplit(":", 1)
        if not port_free(host, int(port)):
            raise ClusterError(
                f"{address} ({what}) is already in use by another process; "
                f"stop it or change {field} in the spec"
            )

    @property
    def _sslmode(self) -> str:
        ca = self.layout.ca_file
        return f"sslmode=verify-full&sslrootcert={ca}" if ca else "sslmode=disable"

    def start_exporter(self, m: Member) -> bool:
        """Start m's exporter unless it runs; returns whether this call started it."""
        if self.exporter_pid(m):
            return False
        listen = self.exporter_address(m)
        if not self.network.enabled:  # in its own namespace the port is the member's alone
            self._check_port(listen, f"exporter of {m.name}", "local.exporter_port")
        dsn = (
            f"postgresql://{self.spec.credentials.superuser}@{m.address}:{m.pg_port}/"
            f"{self.spec.database}?connect_timeout=3&{self._sslmode}"
        )
        self._spawn(
            f"exporter-{m.name}",
            [
                EXPORTER,
                f"--web.listen-address={listen}",
                f"--extend.query-path={self.dir / 'queries.yaml'}",
                *EXPORTER_ARGS,
            ],
            {"DATA_SOURCE_NAME": dsn, "PGPASSFILE": str(self.dir / "pgpass")},
            member=m,
        )
        return True

    def start_pooler_exporter(self) -> bool:
        """Start the pooler's exporter unless it runs; returns whether this call started it.
        It is the one Python process here: unlike the Debian binaries it can fail at its
        imports, so it is waited for until it serves."""
        if self.pooler_exporter_pid():
            return False
        listen = self.pooler_exporter_address
        self._check_port(listen, "the pooler's exporter", "local.pooler_exporter_port")
        self._start_served(
            POOLER_EXPORTER,
            pooler_exporter_argv(str(self.dir / POOLER_EXPORTER_CONFIG)),
            {"PGPASSFILE": str(self.dir / "pgpass")},
            f"http://{listen}/metrics",
            20,
        )
        return True

    def _start_served(
        self, name: str, cmd: list[str], env: dict[str, str], url: str, timeout: float
    ) -> None:
        """Spawn ``name`` and wait until ``url`` answers 200 (a ClusterError naming its log if
        it exits first or does not answer in ``timeout`` s)."""
        proc = self._spawn(name, cmd, env)
        self._process(name).await_ready(
            proc,
            # 5 s: a scrape of the pooler's exporter may wait its 3 s connect timeout
            lambda: httpx.get(url, timeout=5).status_code == 200,
            timeout,
            f"{name} to serve {url}",
            ignore=(httpx.HTTPError,),
        )

    def _follow_pooler(self) -> None:
        """The pooler's exporter where the spec has a pooler; stopped where it no longer has."""
        if self.spec.pooler.enabled:
            self.start_pooler_exporter()
        else:
            self._stop(self._pid_names(POOLER_EXPORTER))

    def start_prometheus(self) -> bool:
        if self.prometheus_pid():
            return False
        listen = f"{self.spec.prometheus_address}:{self.spec.local.prometheus_port}"
        self._check_port(listen, "prometheus", "local.prometheus_port")
        self._start_served(
            PROMETHEUS,
            [
                PROMETHEUS,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--storage.tsdb.retention.time={self.spec.local.prometheus_retention}",
                f"--web.listen-address={listen}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            {},
            f"{self.prometheus_url}/-/ready",
            30,
        )
        return True

    def start(self, members: list[Member], superuser_password: str) -> None:
        """Configuration, an exporter per member, the pooler's and Prometheus (each only if
        not running)."""
        missing = missing_tools(self.spec.pooler.enabled)
        if missing:
            raise ClusterError(
                f"metrics need {', '.join(missing)}, not installed: scripts/bootstrap.sh --dev "
                f"installs {'them' if len(missing) > 1 else 'it'}"
            )
        self.write_config(members, superuser_password)
        for m in members:
            self.start_exporter(m)
        self._follow_pooler()
        self.start_prometheus()

    def sync(self, members: list[Member]) -> None:
        """Follow a changed member list: targets rewritten, exporters started or stopped."""
        self.write_targets(members)
        for m in members:
            self.start_exporter(m)
        self._follow_pooler()
        names = {f"exporter-{m.name}" for m in members}
        self._stop([n for n in self._pid_names("exporter-") if n not in names])

    def _stop(self, names: list[str]) -> None:
        daemons = [self._process(n) for n in names]
        stop_all(daemons, 5)
        for d in daemons:
            d.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop Prometheus and every exporter of this directory (its data stays)."""
        self._stop(self._pid_names())

    # ---- reading back -----------------------------------------------------------------
    def targets(self) -> list[dict[str, Any]]:
        """Prometheus's view of its scrape targets: job, member, health, last error."""
        try:
            r = httpx.get(f"{self.prometheus_url}/api/v1/targets", timeout=5)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise ClusterError(
                f"prometheus at {self.prometheus_url} does not answer: {e}", self.log(PROMETHEUS)
            ) from None
        out = []
        for t in r.json()["data"]["activeTargets"]:
            labels = t.get("labels", {})
            out.append(
                {
                    "job": labels.get("job", ""),
                    "member": labels.get("member", ""),
                    "citus_group": labels.get("citus_group", ""),
                    "endpoint": t.get("scrapeUrl", ""),
                    "health": t.get("health", "unknown"),
                    "last_error": t.get("lastError", ""),
                }
            )
        return sorted(out, key=lambda t: (t["job"], t["member"]))

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query: the result vector (each a metric's labels and its value)."""
        r = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]


__all__ = ["EXPORTER", "POOLER_EXPORTER", "PROMETHEUS", "Monitoring", "missing_tools"]
