"""TLS of a local cluster, the same as on Kubernetes: a CA of the cluster's own in the state
directory and a serving certificate per member for its address, so PostgreSQL (``hostssl``
rules only), Citus's connections between nodes and Patroni's REST API all verify the name
they reach (``verify-full``).

The CA's key never leaves ``<state>/tls`` (mode 0600, the invoking user's); a member's key is
in its own directory, mode 0600, owned by the service user that runs its PostgreSQL. ``up``
issues what is missing and renews a certificate in the last tenth of its validity (or one
that no longer names its member's address); PostgreSQL and Patroni read them at start and
on reload.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ...pki import CA
from .credentials import write_private
from .layout import Layout, Member

CA_NAME = "citus-pipeline local cluster CA"


def _ca(layout: Layout) -> CA:
    """The cluster's CA, valid ten times as long as the certificates it issues."""
    d = layout.tls_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)  # the service user reads ca.crt (sslrootcert); ca.key stays 0600
    cn, valid = f"{CA_NAME} {layout.spec.name}", 10 * _validity(layout)
    ca = CA.load_or_create(d, cn, valid)
    if _due(ca.cert, valid):
        # a CA near its end is replaced, and with it every certificate it issued
        for f in (d / "ca.crt", d / "ca.key"):
            f.unlink()
        ca = CA.load_or_create(d, cn, valid)
    return ca


def _validity(layout: Layout) -> dt.timedelta:
    return dt.timedelta(days=layout.spec.tls.validity_days)


def _due(cert: x509.Certificate, valid: dt.timedelta) -> bool:
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < valid / 10


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def _current(cert_file: Path, key_file: Path, ips: set[str], ca: CA, valid: dt.timedelta) -> bool:
    """The certificate exists, names every one of ``ips``, is signed by ``ca``, is not due."""
    if not (cert_file.exists() and key_file.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False  # unreadable, or from a CA since replaced
    return ips <= _names(cert) and not _due(cert, valid)


def _serving(
    ca: CA,
    valid: dt.timedelta,
    cert_file: Path,
    key_file: Path,
    name: str,
    ips: tuple[str, ...],
    owner: pwd.struct_passwd | None,
) -> bool:
    """A current serving certificate for ``ips`` at ``cert_file``, issued where it is not;
    True if it was."""
    if _current(cert_file, key_file, set(ips), ca, valid):
        return False
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_file.parent, 0o755)
    crt, key = ca.issue(name, ips=ips, server=True, client=False, valid=valid)
    # PostgreSQL (and PgBouncer) refuse a key others could read: the service user owns it
    write_private(key_file, key.decode(), owner)
    write_private(cert_file, crt.decode(), owner)
    os.chmod(cert_file, 0o644)
    return True


def member_ips(layout: Layout, m: Member) -> tuple[str, ...]:
    """What m's certificate names: its address and, for a coordinator member, the leader
    endpoint, which PgBouncer reaches it through (verify-full checks that name)."""
    if m.group == 0 and layout.spec.pooler.enabled:
        return (m.address, str(layout.spec.leader_endpoint_address))
    return (m.address,)


def ensure(layout: Layout, members: list[Member], owner: pwd.struct_passwd | None) -> list[Member]:
    """The CA and a current certificate for each of ``members`` (nothing with tls off);
    returns the members whose certificate was issued now (a running one must reload)."""
    if not layout.spec.tls.enabled:
        return []
    ca, valid = _ca(layout), _validity(layout)
    return [
        m
        for m in members
        if _serving(ca, valid, m.tls_cert, m.tls_key, m.name, member_ips(layout, m), owner)
    ]


def ensure_pooler(layout: Layout, owner: pwd.struct_passwd | None) -> None:
    """The pooler's certificate (its clients verify-full it too)."""
    if not layout.spec.tls.enabled:
        return
    ca, valid = _ca(layout), _validity(layout)
    cert, key = layout.pooler_tls
    name = f"{layout.spec.name}-pooler"
    _serving(ca, valid, cert, key, name, (str(layout.spec.pooler_address),), owner)


__all__ = ["ensure", "ensure_pooler", "member_ips"]
