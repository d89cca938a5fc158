"""Container entrypoint: write patroni.yml from the environment, then exec Patroni.

Inputs (set by the StatefulSets rendered by `citus-pipeline k8s render`):

* PATRONI_SCOPE, PATRONI_NAME (pod name), PATRONI_CITUS_GROUP, PATRONI_CITUS_DATABASE,
  PATRONI_KUBERNETES_* (namespace, labels, use_endpoints, pod_ip, ...): read by Patroni itself.
* PATRONI_POSTGRESQL_CONNECT_ADDRESS / PATRONI_RESTAPI_CONNECT_ADDRESS: the member's stable DNS
  name; when absent they are built from CITUS_HEADLESS_SERVICE (pod.service.namespace.svc) or,
  failing that, from the pod IP.
* Passwords (PATRONI_SUPERUSER_PASSWORD, PATRONI_REPLICATION_PASSWORD, PATRONI_RESTAPI_PASSWORD)
  come from a Secret through the environment; they are never written to patroni.yml.
* CITUS_PATRONI_BOOTSTRAP_FILE: the bootstrap/DCS settings (ConfigMap rendered from the spec).
* CITUS_TLS_DIR: mounted Secret with tls.crt, tls.key, ca.crt; the key is copied with mode 0600
  because PostgreSQL refuses a key readable by others.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

POSTGRES_PORT = 5432
RESTAPI_PORT = 8008
CONFIG_PATH = Path(os.environ.get("CITUS_PATRONI_CONFIG", "/tmp/patroni.yml"))
KEY_COPY = Path("/tmp/tls/tls.key")
REQUIRED = (
    "PATRONI_SCOPE",
    "PATRONI_NAME",
    "PATRONI_CITUS_GROUP",
    "PATRONI_SUPERUSER_PASSWORD",
    "PATRONI_REPLICATION_PASSWORD",
    "PATRONI_RESTAPI_PASSWORD",
)


class EntrypointError(RuntimeError):
    pass


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def connect_host(env: dict[str, str]) -> str:
    """The member's stable DNS name, else its pod IP."""
    name = env.get("PATRONI_NAME", "")
    svc = env.get("CITUS_HEADLESS_SERVICE")
    ns = env.get("PATRONI_KUBERNETES_NAMESPACE")
    if svc and ns and name:
        return f"{name}.{svc}.{ns}.svc"
    ip = env.get("PATRONI_KUBERNETES_POD_IP")
    if not ip:
        raise EntrypointError(
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS, CITUS_HEADLESS_SERVICE and PATRONI_KUBERNETES_POD_IP "
            "are all unset: no address to register"
        )
    return ip


def build_config(env: dict[str, str]) -> dict[str, Any]:
    """patroni.yml contents (no secrets) from the environment and the bootstrap file."""
    missing = [k for k in REQUIRED if not env.get(k)]
    if missing:
        raise EntrypointError(f"environment variables not set: {', '.join(missing)}")
    if not env["PATRONI_CITUS_GROUP"].isdigit():
        raise EntrypointError(
            f"PATRONI_CITUS_GROUP={env['PATRONI_CITUS_GROUP']!r} is not a group number"
        )
    base: dict[str, Any] = {}
    bootstrap = env.get("CITUS_PATRONI_BOOTSTRAP_FILE")
    if bootstrap:
        p = Path(bootstrap)
        if not p.is_file():
            raise EntrypointError(f"{p}: bootstrap file (CITUS_PATRONI_BOOTSTRAP_FILE) not found")
        base = yaml.safe_load(p.read_text()) or {}
        if not isinstance(base, dict):
            raise EntrypointError(f"{p}: bootstrap file must be a mapping")
    pg_addr = (
        env.get("PATRONI_POSTGRESQL_CONNECT_ADDRESS") or f"{connect_host(env)}:{POSTGRES_PORT}"
    )
    api_addr = env.get("PATRONI_RESTAPI_CONNECT_ADDRESS") or f"{connect_host(env)}:{RESTAPI_PORT}"
    local = {
        "scope": env["PATRONI_SCOPE"],
        "name": env["PATRONI_NAME"],
        "kubernetes": {"use_endpoints": True},
        "citus": {
            "group": int(env["PATRONI_CITUS_GROUP"]),
            "database": env.get("PATRONI_CITUS_DATABASE", "citus"),
        },
        "restapi": {
            "listen": env.get("PATRONI_RESTAPI_LISTEN", f"0.0.0.0:{RESTAPI_PORT}"),
            "connect_address": api_addr,
        },
        "postgresql": {
            "listen": env.get("PATRONI_POSTGRESQL_LISTEN", f"0.0.0.0:{POSTGRES_PORT}"),
            "connect_address": pg_addr,
            "data_dir": env.get("PATRONI_POSTGRESQL_DATA_DIR", "/home/postgres/pgdata/pgroot/data"),
            "pgpass": env.get("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass"),
        },
    }
    if env.get("PATRONI_POSTGRESQL_BIN_DIR"):
        local["postgresql"]["bin_dir"] = env["PATRONI_POSTGRESQL_BIN_DIR"]
    return _merge(base, local)


def prepare_tls(tls_dir: str | None, key_copy: Path = KEY_COPY) -> None:
    if not tls_dir:
        raise EntrypointError("CITUS_TLS_DIR is not set: TLS between members is required")
    d = Path(tls_dir)
    for f in ("tls.crt", "tls.key", "ca.crt"):
        if not (d / f).is_file():
            raise EntrypointError(
                f"{d / f}: missing (mount the TLS Secret with tls.crt, tls.key, ca.crt)"
            )
    key_copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(d / "tls.key", key_copy)
    os.chmod(key_copy, 0o600)


def write_config(config: dict[str, Any], path: Path = CONFIG_PATH) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=False)


def main() -> None:
    env = dict(os.environ)
    try:
        prepare_tls(env.get("CITUS_TLS_DIR"))
        write_config(build_config(env))
    except (EntrypointError, OSError) as e:
        print(f"citus-entrypoint: {e}", file=sys.stderr)
        sys.exit(2)
    patroni = shutil.which("patroni") or "/opt/patroni/bin/patroni"
    os.execv(patroni, [patroni, str(CONFIG_PATH)])


if __name__ == "__main__":
    main()
