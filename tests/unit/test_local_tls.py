"""The local cluster's TLS files (issued, kept, renewed) and how the Patroni config and the
DSNs use them; the pooler's configs. No process runs here (test_tls.py and
test_endpoints.py start real ones)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.local import credentials, tls
from citus_pipeline.cluster.local.layout import Layout
from citus_pipeline.cluster.local.patroni import config_changed, patroni_config, write_config
from citus_pipeline.cluster.local.pooler import Pooler
from citus_pipeline.cluster.spec import ClusterSpec, spec_from_mapping
from citus_pipeline.errors import SpecError

CREDS = dict.fromkeys(("superuser", "replication", "restapi", "etcd"), "pw")
BIN = Path("/usr/lib/postgresql/15/bin")


def _ips(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def test_certificates_name_each_member_and_keys_are_private(tmp_path):
    layout = Layout(ClusterSpec(), tmp_path)
    members = layout.members([0, 1])
    tls.ensure(layout, members, None)
    assert stat.S_IMODE((layout.tls_dir / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.ca_file.stat().st_mode) == 0o644
    endpoint = str(layout.spec.leader_endpoint_address)
    for m in members:
        assert stat.S_IMODE(m.tls_key.stat().st_mode) == 0o600
        # the coordinator's members are reached through the leader endpoint too
        assert _ips(m.tls_cert) == ({m.address, endpoint} if m.group == 0 else {m.address})


def test_a_current_certificate_is_kept_and_a_stale_one_reissued(tmp_path):
    layout = Layout(ClusterSpec(), tmp_path)
    m = layout.member(1, 1)
    tls.ensure(layout, [m], None)
    first = m.tls_cert.read_bytes()
    tls.ensure(layout, [m], None)
    assert m.tls_cert.read_bytes() == first  # nothing due: the same certificate
    # the cluster moved to other addresses: the certificate no longer names its member
    moved = Layout(spec_from_mapping({"local": {"base_address": "127.0.90.0"}}), tmp_path)
    tls.ensure(moved, [moved.member(1, 1)], None)
    assert _ips(m.tls_cert) == {"127.0.91.1"}
    # a new CA (its files deleted): every certificate it did not issue is replaced
    renewed = m.tls_cert.read_bytes()
    for f in ("ca.crt", "ca.key"):
        (layout.tls_dir / f).unlink()
    tls.ensure(moved, [moved.member(1, 1)], None)
    assert m.tls_cert.read_bytes() != renewed


def test_certificates_in_their_last_tenth_are_renewed(tmp_path):
    spec = spec_from_mapping({"tls": {"validity_days": 10}})
    layout = Layout(spec, tmp_path)
    m = layout.member(0, 1)
    tls.ensure(layout, [m], None)
    cert = x509.load_pem_x509_certificate(m.tls_cert.read_bytes())
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=9) < left <= dt.timedelta(days=10)
    assert not tls._due(cert, dt.timedelta(days=10))
    assert tls._due(cert, dt.timedelta(days=100))  # 10 days left of 100: its last tenth


def test_patroni_config_is_tls_only(tmp_path):
    layout = Layout(ClusterSpec(), tmp_path)
    m = layout.member(1, 2)
    cfg = patroni_config(layout.spec, m, CREDS, BIN)
    assert cfg["restapi"]["certfile"] == str(m.tls_cert)
    assert cfg["restapi"]["cafile"] == str(layout.ca_file)
    params = cfg["postgresql"]["parameters"]
    assert params["ssl"] == "on" and params["ssl_key_file"] == str(m.tls_key)
    assert params["citus.node_conninfo"].startswith(
        f"sslmode=verify-full sslrootcert={layout.ca_file} "
    )
    tcp = [r for r in cfg["postgresql"]["pg_hba"] if not r.startswith("local ")]
    assert tcp and all(r.startswith("hostssl ") for r in tcp)
    for auth in cfg["postgresql"]["authentication"].values():
        assert auth["sslmode"] == "verify-full"
    assert m.api_url.startswith("https://")


def test_with_tls_off_nothing_of_it_is_configured(tmp_path):
    layout = Layout(spec_from_mapping({"tls": {"enabled": False}}), tmp_path)
    m = layout.member(0, 1)
    cfg = patroni_config(layout.spec, m, CREDS, BIN)
    assert "certfile" not in cfg["restapi"] and "ssl" not in cfg["postgresql"]["parameters"]
    assert m.api_url.startswith("http://")
    assert "sslmode" not in credentials.coordinator_dsn(layout)
    tls.ensure(layout, [m], None)
    assert not layout.tls_dir.exists()


def test_every_dsn_verifies_the_server(tmp_path):
    layout = Layout(ClusterSpec(), tmp_path)
    ca = f"sslmode=verify-full sslrootcert={layout.ca_file}"
    for dsn in (
        credentials.coordinator_dsn(layout),
        credentials.pooler_dsn(layout),
        credentials.read_dsn(layout),
        credentials.member_dsn(layout, layout.member(2, 1)),
    ):
        assert ca in dsn, dsn
    read = credentials.read_dsn(layout)
    assert "target_session_attrs=prefer-standby" in read
    assert "citus.use_secondary_nodes=always" in read
    assert "default_transaction_read_only=on" in read


def test_kubernetes_refuses_tls_off():
    with pytest.raises(SpecError, match="tls.enabled: false is for the local backend only"):
        mf.render_files(spec_from_mapping({"tls": {"enabled": False}}))


def test_the_pooler_routes_to_the_leader_only_and_verifies_it(tmp_path):
    layout = Layout(ClusterSpec(), tmp_path)
    pooler = Pooler(layout, None)
    ha = pooler.haproxy_config(layout.members([0]))
    assert "http-check send meth GET uri /primary" in ha
    assert "on-marked-down shutdown-sessions" in ha
    for m in layout.members([0]):
        assert f"server {m.name} {m.address}:{m.pg_port} check port {m.api_port} " in ha
    assert ha.count(f"check-ssl verify required ca-file {layout.ca_file}") == 3
    ini = pooler.pgbouncer_config()
    assert f"* = host={layout.spec.leader_endpoint_address} port=5432" in ini
    assert "pool_mode = transaction" in ini and "auth_type = scram-sha-256" in ini
    assert "server_tls_sslmode = verify-full" in ini and "client_tls_sslmode = require" in ini


def test_the_spec_keeps_the_pool_under_half_of_max_connections():
    with pytest.raises(SpecError, match="default_pool_size 150 must leave"):
        spec_from_mapping({"pooler": {"default_pool_size": 150}})
    assert spec_from_mapping({"pooler": {"enabled": False, "default_pool_size": 150}})


def test_a_changed_config_is_told_from_the_written_one(tmp_path):
    layout = Layout(ClusterSpec(), tmp_path)
    m = layout.member(1, 1)
    m.dir.mkdir(parents=True)
    cfg = patroni_config(layout.spec, m, CREDS, BIN)
    write_config(m, cfg, None)
    assert not config_changed(m, cfg)
    # the bootstrap section applied once: a difference there changes nothing
    assert not config_changed(m, {**cfg, "bootstrap": {}})
    plain = Layout(spec_from_mapping({"tls": {"enabled": False}}), tmp_path)
    assert config_changed(m, patroni_config(plain.spec, plain.member(1, 1), CREDS, BIN))


def test_a_client_trusts_the_ca_now_at_the_path_not_the_one_before(tmp_path):
    """A cluster purged and made again in the same state directory has a new CA at the same
    path: a client context asked for after that must verify the new cluster's server."""
    import socket
    import ssl
    import threading

    from citus_pipeline.pki import CA, client_context

    def handshake(ca_dir: Path) -> bool:
        ca = CA.load_or_create(ca_dir, "test-ca")
        crt, key = ca.issue_files(ca_dir, "server", "127.0.0.1", ips=("127.0.0.1",), server=True)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(crt, key)
        with socket.create_server(("127.0.0.1", 0)) as srv:
            port = srv.getsockname()[1]

            def serve() -> None:
                conn, _ = srv.accept()
                try:
                    server_ctx.wrap_socket(conn, server_side=True).close()
                except (ssl.SSLError, OSError):
                    conn.close()

            t = threading.Thread(target=serve)
            t.start()
            try:
                with socket.create_connection(("127.0.0.1", port)) as raw:
                    client_context(ca_dir / "ca.crt").wrap_socket(raw, server_hostname="127.0.0.1")
                return True
            except ssl.SSLCertVerificationError:
                return False
            finally:
                t.join()

    state = tmp_path / "tls"
    state.mkdir()
    assert handshake(state)
    for f in state.iterdir():  # purged, then made again: a new CA at the same path
        f.unlink()
    assert handshake(state)
