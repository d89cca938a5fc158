"""`citus-pipeline k8s ...`: render, validate and apply the Kubernetes manifests; cluster status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from . import manifests as mf
from .citus_meta import DrainError
from .spec import ClusterSpec, SpecError, load_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE_DIR = REPO_ROOT / "k8s" / "base"

app = typer.Typer(
    help="Production deployment on Kubernetes (manifests rendered from the cluster spec).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="cluster spec YAML (default: cluster.yaml)")
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="kubeconfig context (default: current)")
]

# (apiVersion, kind) -> (plural, namespaced) for every kind we render or the overlay adds.
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Endpoints"): ("endpoints", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
}
# Patroni owns these after creation (leader IP in subsets, state in annotations): create only,
# never re-apply, or an apply would wipe the leader endpoint.
CREATE_ONLY_KINDS = {"Endpoints"}
_OBJECT = {200: "object", 201: "object", 202: "object"}


def _fail(e: Exception | str) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _spec(path: Path | None) -> ClusterSpec:
    try:
        return load_spec(path)
    except SpecError as e:
        _fail(e)
        raise  # unreachable


def resource_path(m: dict[str, Any], name: str | None = None) -> str:
    """REST path of one object (collection path when ``name`` is ''), for the kinds we render."""
    key = (m.get("apiVersion", ""), m.get("kind", ""))
    meta = m.get("metadata") or {}
    if key not in RESOURCES:
        raise SpecError(
            f"{key[1]} {meta.get('name')}: kind {key[0]}/{key[1]} is not supported by apply"
        )
    plural, namespaced = RESOURCES[key]
    prefix = "/api/v1" if key[0] == "v1" else f"/apis/{key[0]}"
    if namespaced:
        ns = meta.get("namespace")
        if not ns:
            raise SpecError(f"{key[1]} {meta.get('name')}: metadata.namespace is missing")
        prefix += f"/namespaces/{ns}"
    obj_name = meta.get("name") if name is None else name
    return f"{prefix}/{plural}" + (f"/{obj_name}" if obj_name else "")


def apply_manifests(
    manifests: list[dict[str, Any]], api_client: Any, dry_run: bool = False
) -> list[tuple[str, str]]:
    """Server-side apply each object (field manager citus-pipeline); Endpoints only if absent.

    Returns (object, action) pairs. ``api_client`` is a ``kubernetes.client.ApiClient``.
    """
    from kubernetes.client.exceptions import ApiException

    done: list[tuple[str, str]] = []
    query = [("fieldManager", mf.FIELD_MANAGER), ("force", "true")]
    if dry_run:
        query.append(("dryRun", "All"))
    for m in manifests:
        label = f"{m['kind']}/{m['metadata']['name']}"
        path = resource_path(m)
        if m["kind"] in CREATE_ONLY_KINDS:
            try:
                api_client.call_api(
                    path,
                    "GET",
                    auth_settings=["BearerToken"],
                    response_types_map=_OBJECT,
                    _return_http_data_only=True,
                )
                done.append((label, "exists (owned by Patroni)"))
                continue
            except ApiException as e:
                if e.status != 404:
                    raise
            api_client.call_api(
                resource_path(m, ""),
                "POST",
                body=m,
                auth_settings=["BearerToken"],
                query_params=[("dryRun", "All")] if dry_run else [],
                response_types_map=_OBJECT,
                _return_http_data_only=True,
            )
            done.append((label, "created"))
            continue
        api_client.call_api(
            path,
            "PATCH",
            body=m,
            query_params=query,
            header_params={
                "Content-Type": "application/apply-patch+yaml",
                "Accept": "application/json",
            },
            auth_settings=["BearerToken"],
            response_types_map=_OBJECT,
            _return_http_data_only=True,
        )
        done.append((label, "applied"))
    return done


def validate_manifests(
    docs: list[tuple[str, dict[str, Any]]], k8s_version: str, strict: bool = True
) -> list[str]:
    """Offline OpenAPI-schema validation (kubernetes-validate); one message per invalid object."""
    try:
        import kubernetes_validate
    except ImportError:
        return ["kubernetes-validate is not installed (uv sync --dev)"]
    problems = []
    for where, m in docs:
        what = f"{where}: {m.get('kind')}/{(m.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(m, k8s_version, strict)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top level)"
            problems.append(f"{what}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{what}: {e.message}")
        except kubernetes_validate.VersionNotSupportedError:
            problems.append(
                f"{what}: Kubernetes {k8s_version} is not supported by kubernetes-validate"
            )
    return problems


@app.command()
def render(
    spec: SpecOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="output directory ('-': print to stdout)")
    ] = DEFAULT_BASE_DIR,
):
    """Render the kustomize base (StatefulSets, Services, RBAC, PDBs, NetworkPolicies, LBs)."""
    s = _spec(spec)
    try:
        if str(out_dir) == "-":
            out.print(
                mf.dump_yaml(mf.cluster_manifests(s)), end="", highlight=False, soft_wrap=True
            )
            return
        written = mf.write_rendered(s, out_dir)
    except (SpecError, OSError) as e:
        _fail(e)
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
    s = _spec(spec)
    version = k8s_version or s.kubernetes.api_version
    try:
        if directory is not None:
            docs = [(str(p), m) for p, m in mf.load_manifest_dir(directory)]
        else:
            docs = [("rendered", m) for m in mf.cluster_manifests(s)]
    except SpecError as e:
        _fail(e)
    problems = validate_manifests(docs, version)
    for p in problems:
        err.print(f"[red]invalid:[/] {p}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"{len(docs)} objects valid against Kubernetes {version} (offline schema)")


def _backend(spec: Path | None, context: str | None):
    from .kubernetes import KubernetesCluster

    return KubernetesCluster(_spec(spec), context=context)


def _errors():
    from .kubernetes import KubernetesClusterError

    try:
        from kubernetes.client.exceptions import ApiException
    except ImportError:  # pragma: no cover
        ApiException = RuntimeError
    return (SpecError, DrainError, KubernetesClusterError, ApiException)


@app.command()
def apply(
    spec: SpecOpt = None,
    context: ContextOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="server-side dry run")] = False,
):
    """Server-side apply the rendered manifests with the current kubeconfig."""
    c = _backend(spec, context)
    try:
        done = apply_manifests(mf.cluster_manifests(c.spec), c.core.api_client, dry_run=dry_run)
    except _errors() as e:
        _fail(f"apply to namespace {c.namespace}: {getattr(e, 'reason', None) or e}")
    for obj, action in done:
        out.print(f"{obj}: {action}", highlight=False)


@app.command()
def status(
    spec: SpecOpt = None,
    context: ContextOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Members (Patroni), pg_dist_node and shards, in the same tables as `cluster status`."""
    from .render import print_topology

    c = _backend(spec, context)
    try:
        topo = c.status()
    except _errors() as e:
        _fail(f"status of namespace {c.namespace}: {getattr(e, 'reason', None) or e}")
    if as_json:
        out.print_json(json.dumps(topo.model_dump()))
    else:
        print_topology(topo, out)


@app.command("add-worker")
def add_worker(spec: SpecOpt = None, context: ContextOpt = None):
    """Create the next worker group (StatefulSet, services, endpoints, PDB) and wait for Citus."""
    c = _backend(spec, context)
    try:
        g = c.add_worker()
    except _errors() as e:
        _fail(e)
    out.print(f"worker group {g} added")


@app.command("remove-worker")
def remove_worker(group: int, spec: SpecOpt = None, context: ContextOpt = None):
    """Drain the group's shards, then delete its objects (nothing is deleted if the drain fails)."""
    c = _backend(spec, context)
    try:
        c.remove_worker(group)
    except _errors() as e:
        _fail(e)
    out.print(f"worker group {group} drained and removed")


@app.command("tls-sans")
def tls_sans(
    spec: SpecOpt = None, groups: Annotated[int | None, typer.Option(help="highest group")] = None
):
    """DNS names the members' TLS certificate must cover (sslmode=verify-full)."""
    for name in mf.tls_dns_names(_spec(spec), groups):
        out.print(name, highlight=False)


__all__ = ["app", "apply_manifests", "resource_path", "validate_manifests"]
