"""Everything a user can get wrong on this machine, found before any process starts.

Which PostgreSQL (and its Citus) the cluster runs, the unprivileged user Patroni runs as when
we are root, whether that user can reach the files it needs, and whether the ports are free.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from ... import settings
from ...errors import ClusterError
from ..spec import ClusterSpec
from .layout import Layout, Member
from .processes import port_free
from .state import STATE_ENV


def service_user(spec: ClusterSpec) -> pwd.struct_passwd:
    user = spec.local.service_user
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise ClusterError(
            f"local.service_user {user!r} does not exist; PostgreSQL refuses to run as root "
            f"(install postgresql-15, which creates 'postgres', or name another user)"
        ) from None


def pg_bin_dir(spec: ClusterSpec) -> Path:
    if spec.local.pg_bin_dir:
        return spec.local.pg_bin_dir
    pg_config = settings.PG_CONFIG.get() or shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return Path(out.stdout.strip())
    default = Path(f"/usr/lib/postgresql/{spec.postgresql.version}/bin")
    if default.exists():
        return default
    raise ClusterError(
        f"PostgreSQL {spec.postgresql.version} not found: install postgresql-"
        f"{spec.postgresql.version} (scripts/bootstrap.sh) or set PG_CONFIG=/path/to/pg_config"
    )


def pg_lib_dir(spec: ClusterSpec) -> Path:
    pg_config = pg_bin_dir(spec) / "pg_config"
    cmd = str(pg_config) if pg_config.exists() else (settings.PG_CONFIG.get() or "pg_config")
    out = subprocess.run([cmd, "--pkglibdir"], capture_output=True, text=True, check=False)
    if out.returncode == 0:
        return Path(out.stdout.strip())
    return pg_bin_dir(spec).parent / "lib"


# sun_path holds 108 bytes with the terminating NUL
SOCKET_PATH_MAX = 107


def check(
    layout: Layout,
    members: list[Member],
    run_as: pwd.struct_passwd | None,
    check_ports: bool = True,
) -> None:
    """Everything a user can get wrong, checked before any process starts."""
    spec = layout.spec
    for m in members:
        socket = m.socket_dir / f".s.PGSQL.{m.pg_port}"
        if len(str(socket)) > SOCKET_PATH_MAX:
            raise ClusterError(
                f"member {m.name}'s socket path {socket} is longer than the {SOCKET_PATH_MAX} "
                f"characters a unix socket allows: use a shorter state directory ({STATE_ENV})"
            )
    bindir = pg_bin_dir(spec)
    postgres = bindir / "postgres"
    if not postgres.exists():
        raise ClusterError(f"{postgres} is missing: install postgresql-{spec.postgresql.version}")
    ver = subprocess.run(
        [str(postgres), "--version"], capture_output=True, text=True, check=False
    ).stdout
    want = f" {spec.postgresql.version}."
    if want not in ver:
        raise ClusterError(
            f"{postgres} is {ver.strip()!r}, the spec asks for PostgreSQL "
            f"{spec.postgresql.version} (set PG_CONFIG or local.pg_bin_dir)"
        )
    citus = pg_lib_dir(spec) / "citus.so"
    if not citus.exists():
        raise ClusterError(
            f"the citus extension is missing: {citus} not found; install "
            f"postgresql-{spec.postgresql.version}-citus-13.2 from the Citus package "
            f"repository (scripts/bootstrap.sh) or set PG_CONFIG to a PostgreSQL that has it"
        )
    if not shutil.which("etcd"):
        raise ClusterError(
            "etcd not found on PATH: install Debian's etcd-server (scripts/bootstrap.sh)"
        )
    if spec.backup.archiving and not shutil.which("pgbackrest"):
        raise ClusterError(
            "pgbackrest not found on PATH: install Debian's pgbackrest (scripts/bootstrap.sh) "
            "or set backup.archiving: false in the spec (no backups, no point-in-time restore)"
        )
    if run_as:
        for path in (
            Path(sys.executable).resolve(),
            Path(sys.base_prefix).resolve(),
            Path(__file__),
        ):
            check_reachable(path, "the Python environment that runs Patroni", run_as)
        check_reachable(layout.state_dir, "the state directory", run_as)
    if check_ports:
        for m in members:
            for port, what in ((m.pg_port, "PostgreSQL"), (m.api_port, "Patroni REST API")):
                if not port_free(m.address, port):
                    raise ClusterError(
                        f"{m.address}:{port} ({what} of member {m.name}) is already in use by "
                        f"another process; stop it or change local.base_address/ports in the spec"
                    )


def check_reachable(path: Path, what: str, user: pwd.struct_passwd) -> None:
    """``user`` must be able to traverse every directory above ``path``."""
    for parent in [p for p in path.parents][::-1]:
        if not parent.exists():
            break
        st = parent.stat()
        if not st.st_mode & 0o001 and not (
            st.st_uid == user.pw_uid or (st.st_gid == user.pw_gid and st.st_mode & 0o010)
        ):
            raise ClusterError(
                f"user {user.pw_name} cannot reach {what} {path}: directory {parent} "
                f"is not searchable by it (chmod o+x {parent}; scripts/bootstrap.sh builds the "
                f"environment on /usr/bin/python3; set {STATE_ENV} for the state directory)"
            )


__all__ = ["check", "check_reachable", "pg_bin_dir", "pg_lib_dir", "service_user"]
