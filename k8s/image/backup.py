#!/opt/patroni/bin/python3
"""citus-backup: pgBackRest in the Patroni + Citus image (the group's stanza, a backup, the
scheduled run of every group).

* ``citus-backup stanza [ACTION ROLE SCOPE]``: Patroni's on_start / on_role_change callback
  (or by hand). On a primary, create the group's stanza or confirm it. Offline: pgBackRest
  then reads pg_control and needs no password, which Patroni does not pass on to callbacks.
* ``citus-backup backup [--type T] [--standby HOST ...]``: in a member's pod (``kubectl
  exec``, or the scheduled run through the exec API), which must be its group's primary.
  Confirm the stanza, then back up the group: with standbys named, pgBackRest copies the
  files from one of them (``--backup-standby``; each standby is ``pg2``, ``pg3``, ... reached
  through its pgBackRest TLS server with this member's certificate), this member only runs
  the start/stop calls; a backup from the standbys that fails is taken from this primary
  instead, said on stderr. pgBackRest reaches PostgreSQL through its socket as the
  superuser, with the container's PATRONI_SUPERUSER_PASSWORD (an exec'd process has the
  container's environment) as PGPASSWORD, given to pgBackRest only.
* ``citus-backup schedule --type T --members SELECTOR ...``: the CronJob (same image). List
  the members, find each group's leader and running standbys by their role labels, and run
  ``citus-backup backup`` in the leader through the exec API with the pod's ServiceAccount,
  one group after the other. Every group is tried; the run fails when any group has no
  leader or its backup failed.

The member's CITUS_PGBACKREST_CONFIG and CITUS_PGBACKREST_STANZA come from its StatefulSet.
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = "citus-backup"
PRIMARY = "primary"  # the role Patroni passes to callbacks for a leader
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
BACKUP_TYPES = ("full", "diff", "incr")

# (pod name, command) -> exit status; the command's output goes to this process's stdout.
ExecFn = Callable[[str, list[str]], int]
RunFn = Callable[[list[str], dict[str, str]], int]


class BackupError(RuntimeError):
    pass


# ---- in a member's pod --------------------------------------------------------------------
def pgbackrest(env: dict[str, str], *args: str) -> list[str]:
    conf, stanza = env.get("CITUS_PGBACKREST_CONFIG"), env.get("CITUS_PGBACKREST_STANZA")
    if not conf or not stanza:
        raise BackupError(
            "CITUS_PGBACKREST_CONFIG and CITUS_PGBACKREST_STANZA are not set: "
            "run this in a member's pod of a cluster with backup.archiving"
        )
    return ["pgbackrest", f"--config={conf}", f"--stanza={stanza}", *args]


def stanza_command(env: dict[str, str]) -> list[str]:
    """Create the stanza, or confirm it (pgBackRest succeeds when it exists and matches)."""
    return pgbackrest(env, "--no-online", "stanza-create")


def backup_command(env: dict[str, str], backup_type: str, *more: str) -> list[str]:
    # detail: a line per file, so a long backup keeps its exec stream busy (kubelet closes
    # streams idle for its streaming-connection-idle-timeout, 4 h by default)
    return pgbackrest(env, f"--type={backup_type}", "--log-level-console=detail", *more, "backup")


PG_KEYS = ("path", "socket-path", "port", "user")


def standby_options(env: dict[str, str], hosts: Iterable[str], tls_port: int) -> list[str]:
    """``--backup-standby`` and one ``pgN`` per standby (N from 2: this primary is pg1),
    reached through its pgBackRest TLS server, verified against the cluster's CA, with this
    member's certificate; its data directory, socket, port and user are this member's own
    (every member runs the same image and spec), read from the stanza's pg1."""
    conf = pgbackrest(env)[1].removeprefix("--config=")
    stanza = env["CITUS_PGBACKREST_STANZA"]
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(Path(conf).read_text())
        pg1 = {
            k: parser.get(stanza, f"pg1-{k}")
            for k in PG_KEYS
            if parser.has_option(stanza, f"pg1-{k}")
        }
    except (OSError, configparser.Error) as e:
        raise BackupError(f"{conf}: cannot read pg1 of stanza {stanza}: {e}") from None
    tls = env.get("CITUS_TLS_DIR")
    if not tls:
        raise BackupError("CITUS_TLS_DIR is not set: the standbys are reached over TLS only")
    out = ["--backup-standby"]
    for i, host in enumerate(hosts, start=2):
        out += [
            f"--pg{i}-host={host}",
            f"--pg{i}-host-type=tls",
            f"--pg{i}-host-port={tls_port}",
            f"--pg{i}-host-cert-file={tls}/tls.crt",
            f"--pg{i}-host-key-file={tls}/tls.key",
            f"--pg{i}-host-ca-file={tls}/ca.crt",
            *(f"--pg{i}-{k}={v}" for k, v in pg1.items()),
        ]
    return out


def backup_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    if env.get("PATRONI_SUPERUSER_PASSWORD"):
        out["PGPASSWORD"] = env["PATRONI_SUPERUSER_PASSWORD"]
    return out


def _run(cmd: list[str], env: dict[str, str]) -> int:
    return subprocess.run(cmd, env=env, check=False).returncode


# pgBackRest's exit status when a lock is held: stanza-create takes the archive lock too, which
# the asynchronous archive-push of this member holds while it pushes (a burst of WAL right
# after a restore or a promotion): seen as a failed backup of a healthy group.
LOCK_HELD = 50
LOCK_ATTEMPTS = 15
LOCK_WAIT_S = 2.0


def _create_stanza(env: dict[str, str], run: RunFn, sleep: Callable[[float], None]) -> int:
    """stanza-create, tried again while another pgBackRest command holds the stanza's lock."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        status = run(stanza_command(env), env)
        if status != LOCK_HELD or attempt == LOCK_ATTEMPTS:
            return status
        print(f"{SCRIPT}: the stanza's lock is held; trying again", file=sys.stderr, flush=True)
        sleep(LOCK_WAIT_S)
    return status


def stanza(env: dict[str, str], role: str | None, run: RunFn = _run, sleep=time.sleep) -> int:
    if role is not None and role != PRIMARY:
        return 0  # a replica's callback: the primary creates the stanza
    return _create_stanza(env, run, sleep)


def backup(
    env: dict[str, str],
    backup_type: str,
    run: RunFn = _run,
    standbys: tuple[str, ...] = (),
    tls_port: int = 8432,
    sleep=time.sleep,
) -> int:
    status = _create_stanza(env, run, sleep)
    if status != 0:
        return status
    if standbys:
        options = standby_options(env, standbys, tls_port)
        status = run(backup_command(env, backup_type, *options), backup_env(env))
        if status == 0:
            return 0
        print(
            f"{SCRIPT}: the backup from a standby failed (exit status {status}); "
            "taking it from this primary",
            file=sys.stderr,
            flush=True,
        )
    return run(backup_command(env, backup_type), backup_env(env))


# ---- the scheduled run (CronJob) ----------------------------------------------------------
@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    running: bool = True


def leaders(pods: Iterable[Pod], group_label: str, leader: str) -> dict[int, str | None]:
    """Every group the members belong to -> its leader's pod (None: no leader right now).

    ``leader`` is the label Patroni puts on a leader, ``key=value``. In the moment of a
    failover two pods may carry it; the first by name is taken, and pgBackRest refuses to
    back up from the one that is no longer primary.
    """
    key, _, value = leader.partition("=")
    out: dict[int, str | None] = {}
    for p in sorted(pods, key=lambda p: p.name):
        group = p.labels.get(group_label, "")
        if not group.isdigit():
            continue
        g = int(group)
        out.setdefault(g, None)
        if out[g] is None and p.running and p.labels.get(key) == value:
            out[g] = p.name
    return dict(sorted(out.items()))


def standbys(pods: Iterable[Pod], group_label: str, standby: str) -> dict[int, list[str]]:
    """Every group -> its running pods that carry Patroni's replica label ``key=value``."""
    key, _, value = standby.partition("=")
    out: dict[int, list[str]] = {}
    for p in sorted(pods, key=lambda p: p.name):
        group = p.labels.get(group_label, "")
        if group.isdigit() and p.running and p.labels.get(key) == value:
            out.setdefault(int(group), []).append(p.name)
    return out


def schedule(
    groups: dict[int, str | None],
    backup_type: str,
    exec_in: ExecFn,
    say: Callable[[str], None] = print,
    sources: dict[int, list[str]] | None = None,
    tls_port: int | None = None,
) -> int:
    """Back up each group on its leader, one after the other, copying from the group's
    standbys (``sources``: group -> their addresses) where it has any; 1 if any group was
    not backed up."""
    if not groups:
        say("no member pods found: nothing backed up")
        return 1
    failed = []
    for g, pod in groups.items():
        if pod is None:
            say(f"group {g}: no leader pod right now; not backed up")
            failed.append(g)
            continue
        hosts = (sources or {}).get(g, [])
        command = [SCRIPT, "backup", f"--type={backup_type}"]
        if hosts:
            command += [f"--standby={h}" for h in hosts]
            command += [f"--tls-port={tls_port}"] if tls_port else []
            say(f"group {g}: {backup_type} backup on {pod}, copied from a standby")
        else:
            say(f"group {g}: {backup_type} backup on {pod} (no standby running)")
        try:
            status = exec_in(pod, command)
        except Exception as e:  # noqa: BLE001 - refused, or the pod went away: the others run
            say(f"group {g}: could not run the backup on {pod}: {e}")
            failed.append(g)
            continue
        if status == 0:
            say(f"group {g}: backed up")
        else:
            say(f"group {g}: backup failed (exit status {status})")
            failed.append(g)
    if failed:
        say(f"not backed up: groups {', '.join(map(str, failed))}")
        return 1
    return 0


def _exit_status(resp) -> int:
    """The exec'd command's exit status from the stream's error channel; 1 when it closed
    without one (the connection broke)."""
    try:
        status = resp.returncode
    except (KeyError, IndexError, TypeError, ValueError):
        status = None
    if status is None:
        print("the exec stream closed without an exit status", file=sys.stderr, flush=True)
        return 1
    return status


class KubernetesMembers:
    """The members' pods and the exec API, with the pod's own ServiceAccount."""

    def __init__(self, namespace: str, container: str) -> None:
        from kubernetes import client, config

        config.load_incluster_config()
        self.core = client.CoreV1Api()
        self.namespace = namespace
        self.container = container

    def pods(self, selector: str) -> list[Pod]:
        items = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [
            Pod(
                p.metadata.name,
                dict(p.metadata.labels or {}),
                p.status.phase == "Running" and p.metadata.deletion_timestamp is None,
            )
            for p in items
        ]

    def exec_in(self, pod: str, command: list[str]) -> int:
        from kubernetes.stream import stream

        resp = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container=self.container,
            command=command,
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        try:
            while resp.is_open():
                resp.update(timeout=30)
                self._forward(resp)
            self._forward(resp)
            return _exit_status(resp)
        finally:
            resp.close()

    @staticmethod
    def _forward(resp) -> None:
        if resp.peek_stdout():
            print(resp.read_stdout(), end="", flush=True)
        if resp.peek_stderr():
            print(resp.read_stderr(), end="", file=sys.stderr, flush=True)


# ---- command line -------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=SCRIPT, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stanza", help="create or confirm the group's stanza (Patroni callback)")
    s.add_argument("action", nargs="?", help="Patroni's callback action (on_start, ...)")
    s.add_argument("role", nargs="?", help="this member's role; only a primary acts")
    s.add_argument("scope", nargs="?")
    b = sub.add_parser("backup", help="back up this member's group (on its primary)")
    b.add_argument("--type", choices=BACKUP_TYPES, default="incr")
    b.add_argument("--standby", action="append", default=[], help="a standby's address")
    b.add_argument("--tls-port", type=int, default=8432, help="pgBackRest's TLS server port")
    r = sub.add_parser("schedule", help="back up every group on its leader (the CronJob)")
    r.add_argument("--type", choices=BACKUP_TYPES, default="incr")
    r.add_argument("--members", required=True, help="label selector of the member pods")
    r.add_argument("--group-label", required=True, help="the label holding the Citus group")
    r.add_argument("--leader", required=True, help="the leader's label, key=value")
    r.add_argument("--standby", help="a streaming standby's label, key=value")
    r.add_argument(
        "--standby-host", default="{pod}", help="a standby's address from {pod} and {group}"
    )
    r.add_argument("--tls-port", type=int, default=8432, help="pgBackRest's TLS server port")
    r.add_argument("--container", required=True, help="the container pgBackRest runs in")
    r.add_argument("--namespace", help="default: the ServiceAccount's namespace")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    try:
        if args.command == "stanza":
            return stanza(env, args.role)
        if args.command == "backup":
            return backup(env, args.type, standbys=tuple(args.standby), tls_port=args.tls_port)
        namespace = args.namespace or SA_NAMESPACE.read_text().strip()
        members = KubernetesMembers(namespace, args.container)
        pods = members.pods(args.members)
        groups = leaders(pods, args.group_label, args.leader)
        found = standbys(pods, args.group_label, args.standby) if args.standby else {}
        sources = {
            g: [args.standby_host.format(pod=p, group=g) for p in names]
            for g, names in found.items()
        }
        say = lambda m: print(m, flush=True)
        return schedule(groups, args.type, members.exec_in, say, sources, args.tls_port)
    except (BackupError, OSError) as e:
        print(f"{SCRIPT}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
