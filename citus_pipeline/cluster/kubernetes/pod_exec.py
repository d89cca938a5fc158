"""A command in a member's container through the exec API (what `kubectl exec` does), its
output kept apart from its errors, with its exit status."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ...errors import KubernetesClusterError


@dataclass(frozen=True)
class Ran:
    status: int  # the command's exit status; 1 when the stream closed without one
    stdout: str
    stderr: str


def run_in_pod(
    core: Any, namespace: str, pod: str, container: str, command: list[str], timeout: float = 600
) -> Ran:
    from kubernetes.client import ApiClient, CoreV1Api

    # stream() swaps the request method of the client it is given for the exec's length:
    # another thread's call through a shared client would go out as a websocket then
    # (kubernetes-client/python#928). A client of its own, with the same configuration.
    private = ApiClient(core.api_client.configuration)
    try:
        return _run(CoreV1Api(private), namespace, pod, container, command, timeout)
    finally:
        private.close()


def _run(
    core: Any, namespace: str, pod: str, container: str, command: list[str], timeout: float
) -> Ran:
    from kubernetes.stream import stream

    resp = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        container=container,
        command=command,
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    out: list[str] = []
    err: list[str] = []
    deadline = time.monotonic() + timeout

    def drain() -> None:
        if resp.peek_stdout():
            out.append(resp.read_stdout())
        if resp.peek_stderr():
            err.append(resp.read_stderr())

    try:
        while resp.is_open():
            resp.update(timeout=5)
            drain()
            if time.monotonic() > deadline:
                raise KubernetesClusterError(
                    f"`{' '.join(command[:3])} ...` in {namespace}/{pod} did not finish "
                    f"within {timeout:.0f} s"
                )
        drain()
        try:
            status = resp.returncode
        except (KeyError, IndexError, TypeError, ValueError):
            status = None
    finally:
        resp.close()
    return Ran(1 if status is None else int(status), "".join(out), "".join(err))


__all__ = ["Ran", "run_in_pod"]
