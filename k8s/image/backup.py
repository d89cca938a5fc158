#!/opt/patroni/bin/python3
"""citus-backup: pgBackRest in the Patroni + Citus image (the group's stanza, a backup, the
scheduled run of every group).

* ``citus-backup stanza [ACTION ROLE SCOPE]``: Patroni's on_start / on_role_change callback
  (or by hand). On a primary, create the group's stanza or confirm it. Offline: pgBackRest
  then reads pg_control and needs no password, which Patroni does not pass on to callbacks.
* ``citus-backup backup [--type T]``: in a member's pod (``kubectl exec``, or the scheduled
  run through the exec API). Confirm the stanza, then back up the group from this member,
  which must be its primary (pgBackRest refuses a standby). pgBackRest reaches PostgreSQL
  through its socket as the superuser, with the container's PATRONI_SUPERUSER_PASSWORD (an
  exec'd process has the container's environment) as PGPASSWORD, given to pgBackRest only.
* ``citus-backup schedule --type T --members SELECTOR ...``: the CronJob (same image). List
  the members, find each group's leader by its role label, and run ``citus-backup backup``
  in it through the exec API with the pod's ServiceAccount, one group after the other. Every
  group is tried; the run fails when any group has no leader or its backup failed.

The member's CITUS_PGBACKREST_CONFIG and CITUS_PGBACKREST_STANZA come from its StatefulSet.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def backup_command(env: dict[str, str], backup_type: str) -> list[str]:
    # detail: a line per file, so a long backup keeps its exec stream busy (kubelet closes
    # streams idle for its streaming-connection-idle-timeout, 4 h by default)
    return pgbackrest(env, f"--type={backup_type}", "--log-level-console=detail", "backup")


def backup_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    if env.get("PATRONI_SUPERUSER_PASSWORD"):
        out["PGPASSWORD"] = env["PATRONI_SUPERUSER_PASSWORD"]
    return out


def _run(cmd: list[str], env: dict[str, str]) -> int:
    return subprocess.run(cmd, env=env, check=False).returncode


def stanza(env: dict[str, str], role: str | None, run: RunFn = _run) -> int:
    if role is not None and role != PRIMARY:
        return 0  # a replica's callback: the primary creates the stanza
    return run(stanza_command(env), env)


def backup(env: dict[str, str], backup_type: str, run: RunFn = _run) -> int:
    status = run(stanza_command(env), env)
    if status != 0:
        return status
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


def schedule(
    groups: dict[int, str | None],
    backup_type: str,
    exec_in: ExecFn,
    say: Callable[[str], None] = print,
) -> int:
    """Back up each group on its leader, one after the other; 1 if any group was not."""
    if not groups:
        say("no member pods found: nothing backed up")
        return 1
    failed = []
    for g, pod in groups.items():
        if pod is None:
            say(f"group {g}: no leader pod right now; not backed up")
            failed.append(g)
            continue
        say(f"group {g}: {backup_type} backup on {pod}")
        try:
            status = exec_in(pod, [SCRIPT, "backup", f"--type={backup_type}"])
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
    r = sub.add_parser("schedule", help="back up every group on its leader (the CronJob)")
    r.add_argument("--type", choices=BACKUP_TYPES, default="incr")
    r.add_argument("--members", required=True, help="label selector of the member pods")
    r.add_argument("--group-label", required=True, help="the label holding the Citus group")
    r.add_argument("--leader", required=True, help="the leader's label, key=value")
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
            return backup(env, args.type)
        namespace = args.namespace or SA_NAMESPACE.read_text().strip()
        members = KubernetesMembers(namespace, args.container)
        groups = leaders(members.pods(args.members), args.group_label, args.leader)
        return schedule(groups, args.type, members.exec_in, lambda m: print(m, flush=True))
    except (BackupError, OSError) as e:
        print(f"{SCRIPT}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
