"""`citus-pipeline k8s build-images`: every image of `recipes.RECIPES`, as OCI archives.

Base (mmdebstrap, cached a week) -> imported into the project's buildah storage -> `buildah
bud` of each Dockerfile on it (layers cached) -> `buildah push` to `<out>/<key>.oci.tar` ->
`<out>/images.json`: per image its reference, user, entrypoint, archive size, build time and
the exact Debian and Python package versions inside.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import settings
from ..errors import ImageBuildError
from . import citus_host, record
from .buildah import Buildah, missing_reason, world_readable
from .debian_base import BASE_REFERENCE, base_tarball
from .recipes import DEFAULT_REGISTRY, RECIPES, Recipe

MANIFEST = "images.json"


def image_cache() -> Path:
    return settings.cache_dir() / "images"


@contextmanager
def _context(
    recipe: Recipe, citus_from_host: bool, notes: dict, bin_dir: Path | None
) -> Iterator[Path]:
    if not recipe.copy_context:
        yield recipe.context
        return
    with tempfile.TemporaryDirectory(prefix=f"{recipe.key}-context-") as tmp:
        ctx = Path(tmp) / "context"
        shutil.copytree(recipe.context, ctx)
        if recipe.has_citus and citus_from_host:
            notes["citus_from_host"] = citus_host.copy_into(ctx)
        for name in recipe.binaries:
            if bin_dir is None or not (bin_dir / name).exists():
                raise ImageBuildError(
                    f"{recipe.key} needs {name}: run scripts/k8s-control-plane.sh"
                )
            shutil.copy2(bin_dir / name, ctx / name)
        yield ctx


def _describe(b: Buildah, reference: str, recipe: Recipe) -> dict:
    cfg = record.image_config(b.inspect(reference))
    if cfg["user"] in ("", "0", "root") or cfg["user"].startswith(("0:", "root:")):
        raise ImageBuildError(f"{reference} runs as root: its Dockerfile must end with USER")
    with b.mounted(reference) as root:
        return {
            **cfg,
            "debian_packages": record.dpkg_packages(root),
            "python_packages": record.python_packages(root, recipe.site_packages),
            "citus_version": record.citus_version(root),
        }


@world_readable()
def build_images(
    out: Path,
    *,
    citus_from_host: bool = False,
    registry: str = DEFAULT_REGISTRY,
    refresh_base: bool = False,
    only: tuple[str, ...] = (),
    recipes: tuple[Recipe, ...] = RECIPES,
    bin_dir: Path | None = None,
    skip_unchanged: bool = False,
    log: Callable[[str], None] = lambda _m: None,
    echo: Callable[[str], None] = lambda _l: None,
) -> dict:
    """Build, archive and describe the images; returns what `images.json` holds."""
    reason = missing_reason()
    if reason:
        raise ImageBuildError(reason)
    unknown = set(only) - {r.key for r in recipes}
    if unknown:
        raise ImageBuildError(f"no image named {', '.join(sorted(unknown))}")
    out.mkdir(parents=True, exist_ok=True)
    cache = image_cache()
    b = Buildah(cache / "storage")
    t0 = time.monotonic()
    tarball, made = base_tarball(cache, refresh=refresh_base, log=log)
    if made or not b.has_image(BASE_REFERENCE):
        b.import_rootfs(tarball, BASE_REFERENCE)
        log(f"imported {BASE_REFERENCE}")
    manifest = {"base": BASE_REFERENCE, "base_s": round(time.monotonic() - t0, 1), "images": []}
    base_id = f"{tarball.stat().st_mtime_ns}:{tarball.stat().st_size}"  # a refresh rebuilds
    previous = {e.get("key"): e for e in _read_manifest(out / MANIFEST).get("images", [])}
    for recipe in recipes:
        if only and recipe.key not in only:
            continue
        reference = recipe.reference(registry)
        digest = _inputs_digest(recipe, citus_from_host, bin_dir, base_id)
        old = previous.get(recipe.key, {})
        if (
            skip_unchanged
            and old.get("inputs_digest") == digest
            and old.get("reference") == reference
            and (out / old.get("archive", "-")).exists()
        ):
            manifest["images"].append(old)
            log(f"{old['archive']}: unchanged inputs, kept")
            continue
        log(f"building {reference}")
        started = time.monotonic()
        notes: dict = {}
        build_args = {"BASE_IMAGE": BASE_REFERENCE}
        if recipe.has_citus and citus_from_host:
            build_args["CITUS_SOURCE"] = "host"
        with _context(recipe, citus_from_host, notes, bin_dir) as ctx:
            b.bud(ctx, recipe.dockerfile_in(ctx), reference, build_args, echo)
        archive = out / f"{recipe.key}.oci.tar"
        b.push_archive(reference, archive)
        entry = {
            "key": recipe.key,
            "reference": reference,
            "archive": archive.name,
            "archive_bytes": archive.stat().st_size,
            "build_s": round(time.monotonic() - started, 1),
            "inputs_digest": digest,
            **notes,
            **_describe(b, reference, recipe),
        }
        manifest["images"].append(entry)
        log(f"{archive.name}: {entry['archive_bytes'] / 1e6:.0f} MB in {entry['build_s']} s")
    # --only rebuilds some: the others' records stay, while their archives are still there
    built = {e["key"] for e in manifest["images"]}
    previous = _read_manifest(out / MANIFEST)
    kept = [
        e
        for e in previous.get("images", [])
        if e.get("key") not in built and (out / e.get("archive", "-")).exists()
    ]
    manifest["images"] = sorted(kept + manifest["images"], key=lambda e: e["key"])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _inputs_digest(
    recipe: Recipe, citus_from_host: bool, bin_dir: Path | None, base_id: str
) -> str:
    extra: list[Path] = []
    if recipe.has_citus and citus_from_host:
        files = citus_host.citus_files()
        extra += [*files["libs"], *files["extension"]]
    extra += [bin_dir / b for b in recipe.binaries if bin_dir and (bin_dir / b).exists()]
    host = "host" if recipe.has_citus and citus_from_host else ""
    files = record.inputs_digest(recipe.context, recipe.inputs, tuple(extra))
    return hashlib.sha256(f"{files}|{host}|{base_id}".encode()).hexdigest()


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
