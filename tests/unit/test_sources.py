"""Sources and chunk parsing without a database: alignment, line numbers, gzip, URL resume,
Windows-1252, CRLF, and every injected bad record rejected at its line with its reason."""

from __future__ import annotations

import gzip
import http.server
import itertools
import json
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from citus_pipeline.data.generate import generate_complete
from citus_pipeline.data.parse import parse_chunk, pieces
from citus_pipeline.data.sources import download, read_chunks, resolve
from citus_pipeline.errors import SourceError

SAMPLE = Path(__file__).parents[1] / "data" / "pp-sample-1995.csv"


def parse_all(path, chunk_bytes=1 << 16):
    inp = resolve(path)[0]
    good, rejects, lines = 0, {}, 0
    for ch in read_chunks(inp, chunk_bytes):
        p = parse_chunk(ch.data, ch.first_line)
        good += p.good.num_rows
        lines += p.lines
        rejects.update({r.line: r for r in p.rejects})
    return good, rejects, lines


def test_chunks_are_record_aligned_and_numbered():
    data = SAMPLE.read_bytes()
    chunks = list(read_chunks(resolve(SAMPLE)[0], 100_000))
    assert len(chunks) > 10
    assert b"".join(c.data for c in chunks) == data
    assert all(c.data.endswith(b"\n") for c in chunks[:-1])
    for a, b in itertools.pairwise(chunks):
        assert b.offset == a.offset + len(a.data) and b.first_line == a.first_line + a.lines
    # the same chunk size cuts the file at the same places
    assert [c.offset for c in read_chunks(resolve(SAMPLE)[0], 100_000)] == [
        c.offset for c in chunks
    ]


def test_pieces_are_record_aligned_and_numbered():
    data = SAMPLE.read_bytes()
    cut = list(pieces(data, 101, 200_000))
    assert len(cut) == -(-len(data) // 200_000)  # equal pieces, no small remainder
    assert b"".join(d for d, _ in cut) == data
    assert all(d.endswith(b"\n") for d, _ in cut[:-1])  # the file has no final LF
    assert [line for _, line in cut] == [
        101 + data[: sum(len(d) for d, _ in cut[:i])].count(b"\n") for i in range(len(cut))
    ]
    # a line longer than a piece stays whole; a last line without LF stays last
    assert list(pieces(b"a\nbbbbbbbbbb\nc", 7, 3)) == [(b"a\nbbbbbbbbbb\n", 7), (b"c", 9)]
    assert list(pieces(b"", 1, 3)) == [] and list(pieces(b"ab", 4, 100)) == [(b"ab", 4)]


def test_a_chunk_parsed_in_pieces_equals_it_parsed_whole(tmp_path):
    p = tmp_path / "bad.csv"
    generate_complete(p, 8_000, seed=5, bad=40, edge_cases=True)
    data = p.read_bytes()
    whole = parse_chunk(data, 1)
    parts = [parse_chunk(d, line) for d, line in pieces(data, 1, 64 << 10)]
    assert len(parts) > 10
    assert sum(x.lines for x in parts) == whole.lines == 8_040
    assert [(r.line, r.reason, r.raw) for x in parts for r in x.rejects] == [
        (r.line, r.reason, r.raw) for r in whole.rejects
    ]
    assert [v for x in parts for v in x.good["transaction_id"].to_pylist()] == whole.good[
        "transaction_id"
    ].to_pylist()


def test_sample_parses_without_rejects():
    good, rejects, lines = parse_all(SAMPLE)
    assert (good, len(rejects), lines) == (10_298, 0, 10_298)


def test_injected_bad_records_rejected_exactly(tmp_path):
    p = tmp_path / "bad.csv"
    r = generate_complete(p, 30_000, seed=9, bad=60, edge_cases=True, crlf=True)
    good, rejects, lines = parse_all(p, 1 << 18)
    assert good == 30_000 and lines == 30_060
    assert {b.line: b.reason for b in r.bad_records} == {k: v.reason for k, v in rejects.items()}
    text = p.read_bytes().split(b"\r\n")
    for b in r.bad_records:
        assert rejects[b.line].raw == text[b.line - 1].decode()


def test_windows_1252_read_as_such():
    line = '"{5BBE9CB3-6332-4EB0-9CD3-8737CEA4A65A}","1000","2001-01-01 00:00","","D","N","F","CAFÉ","","","","","","","A","A"\n'
    p = parse_chunk(line.encode("cp1252") * 3, 7)
    assert p.transcoded_lines == 3 and p.rejects == []
    assert p.good.column("paon").to_pylist() == ["CAFÉ"] * 3
    assert p.good_lines.tolist() == [7, 8, 9]


def test_gzip_and_directory(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "b.csv.gz").write_bytes(gzip.compress(SAMPLE.read_bytes()))
    (d / "a.csv").write_bytes(SAMPLE.read_bytes()[:1000].rsplit(b"\n", 1)[0] + b"\n")
    (d / "notes.md").write_text("not data")
    inputs = resolve(d)
    assert [i.path.name for i in inputs] == ["a.csv", "b.csv.gz"] and inputs[1].is_gzip
    good, rejects, _ = parse_all(inputs[1].path)
    assert good == 10_298 and not rejects
    with pytest.raises(SourceError, match="no such file"):
        resolve(tmp_path / "missing.csv")


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with Range support; the first response is cut off mid-body."""

    body = b""
    drops = 1
    requests: ClassVar[list] = []

    def do_GET(self):
        cls = type(self)
        rng = self.headers.get("Range")
        cls.requests.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        part = cls.body[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(cls.body) - 1}/{len(cls.body)}")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if cls.drops:
            cls.drops -= 1
            self.wfile.write(part[: len(part) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-download
            return
        self.wfile.write(part)

    def log_message(self, *a):
        pass


@pytest.fixture
def flaky_server():
    _FlakyHandler.body = SAMPLE.read_bytes() * 8
    _FlakyHandler.drops = 2
    _FlakyHandler.requests = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/pp-sample-1995.csv"
    srv.shutdown()


def test_download_resumes_after_dropped_connections(tmp_path, flaky_server):
    path = download(flaky_server, tmp_path, backoff=0.01)
    assert path.read_bytes() == _FlakyHandler.body
    reqs = _FlakyHandler.requests
    assert reqs[0] is None and len(reqs) == 3
    resumed_at = [int(r[6:-1]) for r in reqs[1:] if r]
    assert resumed_at and resumed_at[0] > 0, "the download resumed with a Range request"
    assert resumed_at == sorted(resumed_at)
    assert not list(tmp_path.glob("*.part"))
    # a finished download is reused
    assert download(flaky_server, tmp_path) == path and len(_FlakyHandler.requests) == 3
    inputs = resolve(flaky_server, cache_dir=tmp_path)
    assert inputs[0].path == path and inputs[0].name == flaky_server
    json.dumps(reqs)
