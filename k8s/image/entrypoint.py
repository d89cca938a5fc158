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
* CITUS_PGBACKREST_CONFIG, CITUS_PGBACKREST_STANZA (with backup.archiving): pgBackRest's config
  and the group's stanza. As on the local backend, WAL is archived into the stanza, recovery
  reads it back, and a new standby restores the latest backup before it streams (pg_basebackup
  when there is none); Patroni's callbacks create the stanza on a new primary (`citus-backup`).
  The S3 keys reach pgBackRest as PGBACKREST_REPO1_S3_KEY[_SECRET], never through a file.
* CITUS_RESTORE (from the ConfigMap `<scope>-restore`, present only during `cluster restore
  --backend kubernetes`): JSON {"id", "phase", "groups": {group: pgBackRest's restore
  arguments}}. In a group it names, phase "restore" sets the member's data directory aside
  once per id and holds its WAL archiving (a file on the volume that archive_command checks)
  until the restore is done; member 0 bootstraps its group from the repository (Patroni's
  custom bootstrap running `pgbackrest restore`), the others clone from it with
  pg_basebackup only (the repository's latest backup may be on a timeline the restore
  leaves). Phase "rollback" puts a set-aside directory back.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

POSTGRES_PORT = 5432
RESTAPI_PORT = 8008
CONFIG_PATH = Path(os.environ.get("CITUS_PATRONI_CONFIG", "/tmp/patroni.yml"))
KEY_COPY = Path("/tmp/tls/tls.key")
DATA_DIR = "/home/postgres/pgdata/pgroot/data"  # unless PATRONI_POSTGRESQL_DATA_DIR says
REQUIRED = (
    "PATRONI_SCOPE",
    "PATRONI_NAME",
    "PATRONI_CITUS_GROUP",
    "PATRONI_SUPERUSER_PASSWORD",
    "PATRONI_REPLICATION_PASSWORD",
    "PATRONI_RESTAPI_PASSWORD",
)


# pgBackRest's working directories (its [global] section names them): on the data volume,
# created here because the volume starts empty.
PGBACKREST_WORK_PATHS = ("spool-path", "lock-path", "log-path")
# Patroni runs it with: <action> <role> <scope>; on a primary it creates or confirms the stanza.
STANZA_CALLBACK = "citus-backup stanza"
# Beside the data directory on its volume, during `cluster restore` (names.py has the same):
RESTORE_ASIDE = "data.before-restore"  # the data directory as it was before the restore
HOLD_ARCHIVE = "restore-hold-archive"  # while it exists, archive_command keeps WAL in pg_wal


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
            "data_dir": env.get("PATRONI_POSTGRESQL_DATA_DIR", DATA_DIR),
            "pgpass": env.get("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass"),
        },
    }
    if env.get("PATRONI_POSTGRESQL_BIN_DIR"):
        local["postgresql"]["bin_dir"] = env["PATRONI_POSTGRESQL_BIN_DIR"]
    config = _merge(_merge(base, local), pgbackrest_config(env))
    return _merge(config, restore_config(env, restore_request(env)))


def data_dir_of(env: dict[str, str]) -> Path:
    return Path(env.get("PATRONI_POSTGRESQL_DATA_DIR", DATA_DIR))


def restore_request(env: dict[str, str]) -> dict[str, Any] | None:
    """The restore's request where it names this member's group, else None."""
    text = env.get("CITUS_RESTORE")
    if not text:
        return None
    try:
        request = json.loads(text)
        groups, phase, rid = request["groups"], request["phase"], str(request["id"])
    except (ValueError, KeyError, TypeError) as e:
        raise EntrypointError(f"CITUS_RESTORE: not a restore request ({e})") from None
    if phase not in ("restore", "rollback") or not rid.isalnum():
        raise EntrypointError(f"CITUS_RESTORE: unknown phase {phase!r} or id {rid!r}")
    return request if env.get("PATRONI_CITUS_GROUP") in groups else None


def restore_config(env: dict[str, str], request: dict[str, Any] | None) -> dict[str, Any]:
    """patroni.yml settings of a member inside a restore: clone from the restored leader
    only; member 0 bootstraps its group from the repository."""
    found = _pgbackrest_env(env)
    if request is None or request["phase"] != "restore" or found is None:
        return {}
    out: dict[str, Any] = {"postgresql": {"create_replica_methods": ["basebackup"]}}
    if env.get("PATRONI_NAME", "").endswith("-0"):
        conf, stanza = found
        args = " ".join(shlex.quote(a) for a in request["groups"][env["PATRONI_CITUS_GROUP"]])
        command = (
            f"pgbackrest --config={shlex.quote(conf)} --stanza={shlex.quote(stanza)} {args} restore"
        )
        # pgBackRest writes the recovery target; Patroni starts with it, kept
        out["bootstrap"] = {
            "method": "pgbackrest",
            "pgbackrest": {
                "command": command,
                "keep_existing_recovery_conf": True,
                "no_params": True,
            },
        }
    return out


def prepare_restore(request: dict[str, Any] | None, data_dir: Path) -> None:
    """Set the data directory aside (phase restore) or put it back (rollback), once per
    restore: a marker beside it says this member's part was done."""
    if request is None:
        return
    root = data_dir.parent
    marker, aside, hold = (
        root / f"restore-{request['id']}",
        root / RESTORE_ASIDE,
        root / HOLD_ARCHIVE,
    )
    if request["phase"] == "restore":
        if marker.exists():
            return
        if aside.exists():  # an earlier restore's, finished: the cluster runs on `data` since
            shutil.rmtree(aside)
        if data_dir.exists():
            data_dir.rename(aside)
        hold.touch()
        marker.touch()
        return
    if not marker.exists():
        return  # this member was not started by the restore: its data is as it was
    if aside.exists():
        if data_dir.exists():
            shutil.rmtree(data_dir)
        aside.rename(data_dir)
        unpause_cached_config(data_dir)
    hold.unlink(missing_ok=True)
    marker.unlink()


def unpause_cached_config(data_dir: Path) -> None:
    """Patroni keeps the DCS config it last saw in the data directory and writes it back to
    an empty DCS: a copy saved while the group was paused would keep it in maintenance mode."""
    cache = data_dir / "patroni.dynamic.json"
    try:
        config = json.loads(cache.read_text())
    except (OSError, ValueError):
        return
    if config.pop("pause", None) is not None:
        cache.write_text(json.dumps(config))


def _pgbackrest_env(env: dict[str, str]) -> tuple[str, str] | None:
    """(config path, stanza), or None when the pod has no pgBackRest (archiving off)."""
    conf = env.get("CITUS_PGBACKREST_CONFIG")
    if not conf:
        return None
    stanza = env.get("CITUS_PGBACKREST_STANZA")
    if not stanza:
        raise EntrypointError("CITUS_PGBACKREST_CONFIG is set but CITUS_PGBACKREST_STANZA is not")
    if not Path(conf).is_file():
        raise EntrypointError(f"{conf}: pgBackRest config (CITUS_PGBACKREST_CONFIG) not found")
    return conf, stanza


def pgbackrest_config(env: dict[str, str]) -> dict[str, Any]:
    """patroni.yml settings for WAL archiving and replicas from the repository: the same
    commands as the local backend's (archive_timeout comes with the bootstrap file)."""
    found = _pgbackrest_env(env)
    if found is None:
        return {}
    conf, stanza = found
    pgbackrest = f"pgbackrest --config={shlex.quote(conf)} --stanza={shlex.quote(stanza)}"
    hold = shlex.quote(str(data_dir_of(env).parent / HOLD_ARCHIVE))
    return {
        "postgresql": {
            "parameters": {
                "archive_mode": "on",
                # held (WAL kept in pg_wal, PostgreSQL retrying) while a restore is under way:
                # a restore rolled back must leave no new timeline in the repository
                "archive_command": f"test ! -e {hold} && {pgbackrest} archive-push %p",
            },
            "recovery_conf": {"restore_command": f"{pgbackrest} archive-get %f %p"},
            # a new standby restores the latest backup and replays the archive, so cloning
            # does not load the leader; without a usable backup it falls back to pg_basebackup
            "create_replica_methods": ["pgbackrest", "basebackup"],
            "pgbackrest": {
                "command": f"{pgbackrest} --delta --type=standby restore",
                "keep_data": True,
                "no_params": True,
            },
            # archive-push fails until the stanza exists: create it as soon as there is a
            # primary (after bootstrap, a restart or a failover), not at the first backup
            "callbacks": {"on_start": STANZA_CALLBACK, "on_role_change": STANZA_CALLBACK},
        }
    }


def prepare_pgbackrest(env: dict[str, str]) -> None:
    """Create pgBackRest's working directories, and the data directory itself: pgBackRest
    restores a replica only into an existing one (initdb and pg_basebackup take it empty)."""
    found = _pgbackrest_env(env)
    if found is None:
        return
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(Path(found[0]).read_text())
    except configparser.Error as e:
        raise EntrypointError(f"{found[0]}: not a pgBackRest config: {e}") from None
    dirs = [parser.get("global", key, fallback="") for key in PGBACKREST_WORK_PATHS]
    dirs.append(env.get("PATRONI_POSTGRESQL_DATA_DIR", DATA_DIR))
    for d in filter(None, dirs):
        Path(d).mkdir(mode=0o700, parents=True, exist_ok=True)


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


def restrict_data_dir(data_dir: str) -> None:
    """A data directory the kubelet opened to the pod's fsGroup (g+rwx, setgid: what its
    recursive ownership change gives every file of a volume) back to 0700: PostgreSQL refuses
    to start on one a group may write. The StatefulSets ask for the change only when the
    volume's root does not match (fsGroupChangePolicy: OnRootMismatch); this holds for a
    volume changed anyway (another policy, a restore, an operator's chown)."""
    d = Path(data_dir)
    if d.is_dir() and d.stat().st_mode & 0o7077 not in (0, 0o050):
        d.chmod(0o700)


def write_config(config: dict[str, Any], path: Path = CONFIG_PATH) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=False)


def main() -> None:
    env = dict(os.environ)
    try:
        prepare_tls(env.get("CITUS_TLS_DIR"))
        config = build_config(env)
        prepare_restore(restore_request(env), Path(config["postgresql"]["data_dir"]))
        prepare_pgbackrest(env)
        restrict_data_dir(config["postgresql"]["data_dir"])
        write_config(config)
    except (EntrypointError, OSError) as e:
        print(f"citus-entrypoint: {e}", file=sys.stderr)
        sys.exit(2)
    patroni = shutil.which("patroni") or "/opt/patroni/bin/patroni"
    os.execv(patroni, [patroni, str(CONFIG_PATH)])


if __name__ == "__main__":
    main()
