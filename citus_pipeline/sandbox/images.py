"""The images the sandbox's nodes run: the product's own (patroni-citus, the Dagster user code,
the exporter; `build-images`, with this machine's Citus) and the sandbox's parts built from
the stack's binaries (pause, CoreDNS, MetalLB), under the names the manifests use. Built when
their inputs changed (the archives and their record live in the image cache), imported into
every node's containerd."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..images.build import MANIFEST, build_images, image_cache
from ..images.buildah import Buildah
from ..images.debian_base import BASE_REFERENCE, SUITE
from ..images.recipes import RECIPES, Recipe
from ..settings import REPO_ROOT
from . import binaries
from .layout import Layout

SANDBOX_REGISTRY = "localhost/citus-pipeline"


def _scratch(key: str, tag: str, user: str, bins: tuple[str, ...]) -> Recipe:
    context = REPO_ROOT / "k8s" / "sandbox" / key
    return Recipe(
        key=key,
        repository=key,
        tag=tag,
        dockerfile=context / "Dockerfile",
        context=context,
        copy_context=True,
        site_packages="-",
        user=user,
        binaries=bins,
    )


PAUSE = _scratch("pause", "3.10", "65535:65535", ("pause",))
COREDNS = _scratch("coredns", "1.15.0", "65532:65532", ("coredns",))
METALLB = _scratch("metallb", "0.15.2", "65534:65534", ("metallb-controller", "metallb-speaker"))
LOCAL_PATH = _scratch(
    "local-path-provisioner", "0.0.30", "65534:65534", ("local-path-provisioner",)
)
KUBE_ROUTER = _scratch("kube-router", "2.1.0", "65534:65534", ("kube-router",))  # Debian base
SANDBOX_RECIPES = (PAUSE, COREDNS, METALLB, LOCAL_PATH, KUBE_ROUTER)
BASE_ARCHIVE = "debian-base.oci.tar"  # the local-path helper pods' image (a shell, mkdir, rm)


def reference(recipe: Recipe) -> str:
    """Where a node finds ``recipe``'s image: the product's under the default registry (the
    manifests' names), the sandbox's own under localhost/."""
    return recipe.reference(SANDBOX_REGISTRY) if recipe in SANDBOX_RECIPES else recipe.reference()


def ensure_images(layout: Layout, log: Callable[[str], None]) -> dict:
    """Every image a node needs as an archive in ``layout.images``; returns images.json."""
    out = layout.images
    common = {"skip_unchanged": True, "bin_dir": binaries.bin_dir(), "log": log}
    build_images(out, citus_from_host=True, recipes=RECIPES, **common)
    done = build_images(out, recipes=SANDBOX_RECIPES, registry=SANDBOX_REGISTRY, **common)
    base = out / BASE_ARCHIVE
    tarball = image_cache() / f"debian-{SUITE}-slim.tar"
    if not base.exists() or base.stat().st_mtime < tarball.stat().st_mtime:
        Buildah(image_cache() / "storage").push_archive(BASE_REFERENCE, base)
    return done


def archives(layout: Layout) -> list[Path]:
    """Every archive a node imports."""
    names = [r.key for r in (*RECIPES, *SANDBOX_RECIPES)]
    return [layout.images / f"{n}.oci.tar" for n in names] + [layout.images / BASE_ARCHIVE]


__all__ = ["MANIFEST", "SANDBOX_RECIPES", "archives", "ensure_images", "reference"]
