"""`citus-pipeline k8s ...`: what only Kubernetes has: render, validate and apply the manifests.

Operating the running cluster (status, add-worker, remove-worker, switchover, ...) is
`citus-pipeline cluster ... --backend kubernetes`, the same commands as for the local cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import settings
from ..cluster.kubernetes import manifests as mf
from ..cluster.kubernetes.apply import apply_manifests, validate_manifests
from ..cluster.spec import load_spec
from ..images.recipes import DEFAULT_REGISTRY
from .sandbox import app as sandbox_app
from .terminal import ContextOpt, SpecOpt, err, fail, out, run, user_errors

DEFAULT_BASE_DIR = settings.REPO_ROOT / "k8s" / "base"

app = typer.Typer(
    help="Production deployment on Kubernetes (manifests rendered from the cluster spec).",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")


@app.command()
def render(
    spec: SpecOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="output directory ('-': print to stdout)")
    ] = DEFAULT_BASE_DIR,
):
    """Render the kustomize base (StatefulSets, Services, RBAC, PDBs, NetworkPolicies, LBs)."""
    s = run(load_spec, spec)
    with user_errors():
        if str(out_dir) == "-":
            out.print(
                mf.dump_yaml(mf.cluster_manifests(s)), end="", highlight=False, soft_wrap=True
            )
            return
        try:
            written = mf.write_rendered(s, out_dir)
        except OSError as e:  # an unwritable --out directory: the user's to fix, not a bug
            fail(e)
    err.print(f"wrote {len(written)} files to {out_dir}")


@app.command()
def validate(
    spec: SpecOpt = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="validate these YAML files instead")
    ] = None,
    k8s_version: Annotated[
        str | None, typer.Option("--k8s-version", help="default: kubernetes.api_version")
    ] = None,
):
    """Validate the rendered manifests against the Kubernetes OpenAPI schema, offline."""
    s = run(load_spec, spec)
    version = k8s_version or s.kubernetes.api_version
    with user_errors():
        if directory is not None:
            docs = [(str(p), m) for p, m in mf.load_manifest_dir(directory)]
        else:
            docs = [("rendered", m) for m in mf.cluster_manifests(s)]
    problems = validate_manifests(docs, version)
    for p in problems:
        err.print(f"[red]invalid:[/] {p}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"{len(docs)} objects valid against Kubernetes {version} (offline schema)")


@app.command()
def apply(
    spec: SpecOpt = None,
    context: ContextOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="server-side dry run")] = False,
):
    """Server-side apply the rendered manifests with the current kubeconfig."""
    from ..cluster.kubernetes import KubernetesCluster

    c = KubernetesCluster(run(load_spec, spec), context=context)
    with user_errors(f"apply to namespace {c.namespace}"):
        done = apply_manifests(mf.cluster_manifests(c.spec), c.core.api_client, dry_run=dry_run)
    for obj, action in done:
        out.print(f"{obj}: {action}", highlight=False)


@app.command("tls-sans")
def tls_sans(
    spec: SpecOpt = None, groups: Annotated[int | None, typer.Option(help="highest group")] = None
):
    """DNS names the members' TLS certificate must cover (sslmode=verify-full)."""
    for name in mf.tls_dns_names(run(load_spec, spec), groups):
        out.print(name, highlight=False)


@app.command("build-images")
def build_images(
    out_dir: Annotated[Path, typer.Option("--out", help="where the OCI archives go")] = Path(
        "images"
    ),
    citus_from_host: Annotated[
        bool,
        typer.Option(
            "--citus-from-host",
            help="take this machine's installed Citus instead of the Citus package repository",
        ),
    ] = False,
    registry: Annotated[
        str, typer.Option(help="registry part of the image names")
    ] = DEFAULT_REGISTRY,
    refresh_base: Annotated[
        bool, typer.Option("--refresh-base", help="make the Debian base again (security updates)")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="build only this image (repeatable)")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="print every build line")
    ] = False,
):
    """Build the images users deploy with buildah (no Docker engine, no registry).

    Writes DIR/<image>.oci.tar and DIR/images.json (what each contains). Push with
    `skopeo copy oci-archive:DIR/patroni-citus.oci.tar docker://cr.yandex/<registry-id>/...`.
    """
    from ..images.build import MANIFEST
    from ..images.build import build_images as build

    def echo(line: str) -> None:
        if verbose or line.startswith("STEP "):
            err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)

    with user_errors("build-images"):
        done = build(
            out_dir,
            citus_from_host=citus_from_host,
            registry=registry,
            refresh_base=refresh_base,
            only=tuple(only or ()),
            log=lambda m: err.print(f"[bold]build-images[/] {m}", highlight=False),
            echo=echo,
        )
    for image in done["images"]:
        out.print(
            f"{out_dir / image['archive']}  {image['reference']}  user {image['user']}  "
            f"{image['archive_bytes'] / 1e6:.0f} MB  {image['build_s']} s",
            highlight=False,
        )
    out.print(str(out_dir / MANIFEST), highlight=False)


__all__ = ["app"]
