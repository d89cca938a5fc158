"""The local supervisor's probe and its count of hung answers, against real sockets."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from citus_pipeline.cluster.local.supervisor import HangCounter, probe
from citus_pipeline.cluster.spec import LIVENESS


class _Liveness(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def patroni_like():
    """An HTTP server on loopback answering /liveness with the status given."""
    servers = []

    def serve(status: int) -> str:
        handler = type("Handler", (_Liveness,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for s in servers:
        s.shutdown()
        s.server_close()


def test_probe_tells_ok_from_stuck_from_nothing_listening(patroni_like):
    assert probe(patroni_like(200), 2) == "ok"
    assert probe(patroni_like(503), 2) == "stuck"  # Patroni: its loop has not run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe(f"http://127.0.0.1:{port}", 2) == "refused"


def test_probe_calls_a_listener_that_never_answers_hung():
    # what a frozen member is: its kernel completes the handshake, nothing reads
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert probe(f"http://127.0.0.1:{s.getsockname()[1]}", 0.5) == "hung"


def test_a_member_is_killed_after_the_threshold_of_hung_answers_in_a_row():
    c, old = HangCounter(), LIVENESS.initial_delay_s + 1
    n = LIVENESS.failure_threshold
    for i in range(n - 1):
        assert not c.observe(7, old, "hung", now=100.0 + 5 * i)
    assert c.observe(7, old, "hung", now=100.0 + 5 * (n - 1))
    assert c.hung_for(7, now=100.0 + 5 * (n - 1)) == 5 * (n - 1) + LIVENESS.timeout_s


def test_an_answer_starts_the_count_afresh():
    c, old = HangCounter(), LIVENESS.initial_delay_s + 1
    for _ in range(LIVENESS.failure_threshold - 1):
        c.observe(7, old, "hung", now=1.0)
    c.observe(7, old, "ok", now=2.0)
    assert not any(
        c.observe(7, old, "hung", now=3.0) for _ in range(LIVENESS.failure_threshold - 1)
    )


def test_a_starting_or_refusing_patroni_is_never_killed():
    c = HangCounter()
    young = LIVENESS.initial_delay_s - 1
    assert not any(c.observe(7, young, "hung", now=float(i)) for i in range(10))
    old = LIVENESS.initial_delay_s + 1
    assert not any(c.observe(8, old, "refused", now=float(i)) for i in range(10))


def test_processes_gone_are_forgotten():
    c, old = HangCounter(), LIVENESS.initial_delay_s + 1
    for _ in range(LIVENESS.failure_threshold - 1):
        c.observe(7, old, "hung", now=1.0)
    c.forget_except(set())
    assert not c.observe(7, old, "hung", now=2.0)
