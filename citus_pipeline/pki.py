"""A certificate authority of the project's own and the certificates it issues: the k8s
sandbox's (client certificates of its components and kubelets, serving certificates of the
apiserver) and a local cluster's (a serving certificate per member, `tls:` in the spec).

A CA is written once into its directory and read back later, so what a user holds (a
kubeconfig, a client's sslrootcert) stays valid for the CA's life.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

VALID = dt.timedelta(days=365)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass
class CA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str, valid: dt.timedelta = VALID) -> CA:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + valid)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load_or_create(cls, directory: Path, cn: str, valid: dt.timedelta = VALID) -> CA:
        crt, key = directory / "ca.crt", directory / "ca.key"
        if crt.exists() and key.exists():
            return cls(
                serialization.load_pem_private_key(key.read_bytes(), password=None),
                x509.load_pem_x509_certificate(crt.read_bytes()),
            )
        ca = cls.create(cn, valid)
        write_private(key, key_pem(ca.key))
        write_private(crt, ca.pem, 0o644)
        return ca

    def issue(
        self,
        cn: str,
        *,
        orgs: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
        client: bool = True,
        valid: dt.timedelta = VALID,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a client (CN = user, O = groups), a server, or both."""
        key = new_key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.UTC)
        usages = [x509.ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client or not server else []
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + valid, self.cert.not_valid_after_utc))
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans = [x509.DNSName(d) for d in dns] + [
            x509.IPAddress(ipaddress.ip_address(i)) for i in ips
        ]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    def issue_files(self, directory: Path, name: str, cn: str, **kw) -> tuple[Path, Path]:
        crt, key = self.issue(cn, **kw)
        return (
            write_private(directory / f"{name}.crt", crt, 0o644),
            write_private(directory / f"{name}.key", key),
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def client_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What an HTTPS client (httpx's ``verify``) trusts: ``ca_file``, or the system's CAs.

    Cached by the certificate's text, not the file's name: a cluster purged and made again
    in the same state directory has a new CA at the same path, and a context kept by path
    went on trusting the old one (every REST call of the new cluster refused)."""
    return _context(Path(ca_file).read_text()) if ca_file else True


@functools.lru_cache(maxsize=8)
def _context(ca_pem: str) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem)
