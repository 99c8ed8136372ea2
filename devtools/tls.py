"""Development certificates for mutual TLS (`make run TLS=1`, the TLS tests): two CAs, ours and the venue's (a CA
of its own, as a real exchange's), and a certificate per identity, each naming it as a URI SAN
(`spiffe://brokerage/<who>`; the venue `spiffe://venue/exchange`) and valid for localhost and 127.0.0.1.

    python -m devtools.tls --dir .local/tls                 # makes what is missing, prints nothing else
    python -m devtools.tls --dir .local/tls --renew order-service   # a new certificate, same identity (rotation)

In production cert-manager issues these (deploy/k8s/components/certificates); nothing here is used there.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from brokerage.rpc.tls import TlsFiles

TRUST_DOMAIN = "spiffe://brokerage"
VENUE = "spiffe://venue/exchange"
# Who holds a certificate of ours: the API layer (OrderService's callers), each service, brokerctl and reconcile.
OURS = (
    "api",
    "order-service",
    "execution-service",
    "callback-service",
    "operations-service",
    "brokerctl",
    "reconcile",
)
VALIDITY = datetime.timedelta(days=30)


def identity(name: str) -> str:
    return VENUE if name == "exchange" else f"{TRUST_DOMAIN}/{name}"


@dataclass(frozen=True)
class DevCertificates:
    directory: Path

    def ensure(self) -> DevCertificates:
        """Makes the CAs and every certificate that does not exist yet."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for ca in ("ca", "venue-ca"):
            if not (self.directory / f"{ca}.crt").exists():
                self._write_ca(ca)
        for name in (*OURS, "exchange"):
            if not (self.directory / f"{name}.crt").exists():
                self.issue(name)
        return self

    def issue(self, name: str) -> None:
        """A new key and certificate for the identity (a renewal, when it had one), written so that a reader never
        sees a half-written pair: key first, then the certificate replaced in one rename."""
        ca = "venue-ca" if name == "exchange" else "ca"
        ca_key = serialization.load_pem_private_key((self.directory / f"{ca}.key").read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate((self.directory / f"{ca}.crt").read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names = [
            x509.UniformResourceIdentifier(identity(name)),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write(self.directory / f"{name}.key", _key_pem(key), private=True)
        _write(self.directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))

    def files(self, name: str, trusting: str = "ca") -> TlsFiles:
        """The identity's certificate and key, trusting the peers of one CA ("ca", ours, or "venue-ca")."""
        return TlsFiles(self.directory / f"{name}.crt", self.directory / f"{name}.key", self.ca(trusting))

    def ca(self, which: str = "ca") -> Path:
        return self.directory / f"{which}.crt"

    def broker_env(self, name: str, peers: tuple[str, ...]) -> dict[str, str]:
        """BROKER_TLS_* for one of our services: its certificate, our CA, and the identities it admits."""
        files = self.files(name)
        return {
            "BROKER_TLS_CERT_FILE": str(files.cert),
            "BROKER_TLS_KEY_FILE": str(files.key),
            "BROKER_TLS_CA_FILE": str(files.ca),
            "BROKER_TLS_PEERS": ",".join(identity(p) for p in peers),
            "BROKER_EXCHANGE_TLS_CA_FILE": str(self.ca("venue-ca")),
        }

    def _write_ca(self, name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dev {name}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY * 12)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write(self.directory / f"{name}.key", _key_pem(key), private=True)
        _write(self.directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    if private:
        partial.chmod(0o600)
    os.replace(partial, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".local/tls"))
    parser.add_argument("--renew", metavar="NAME", help="issue a new certificate for this identity")
    args = parser.parse_args()
    certificates = DevCertificates(args.dir).ensure()
    if args.renew:
        certificates.issue(args.renew)


if __name__ == "__main__":
    main()
