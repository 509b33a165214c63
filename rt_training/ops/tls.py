"""Certificates for a local TLS listener, made with the ``openssl`` command line tool.

A private certificate authority signs one server certificate valid for ``localhost`` and ``127.0.0.1``; Kafka
reads both as PEM files (``ssl.keystore.type=PEM``), clients trust the CA file. Private keys are written with
mode 0600 and never leave the folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_HINT = "apt-get install openssl"
DEFAULT_DAYS = 365


class CertificateError(RuntimeError):
    """openssl is missing or failed; the message names the command and its output."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA's certificate (what clients trust) and its private key (what signs server certificates)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ServerCertificate:
    """A server certificate signed by ``ca``, and ``keystore``: its key followed by its certificate chain."""

    ca: CertificateAuthority
    cert: Path
    key: Path
    keystore: Path


def find_openssl() -> str:
    """Path of the ``openssl`` executable; :class:`CertificateError` says how to install it when absent."""
    found = shutil.which("openssl")
    if found is None:
        raise CertificateError(
            f"the TLS listener needs the openssl command to make its certificates: `{OPENSSL_HINT}`"
        )
    return found


def make_certificate_authority(
    folder: Path, name: str = "rt-training local CA", days: int = DEFAULT_DAYS
) -> CertificateAuthority:
    """Create a self-signed CA (``ca.pem``, ``ca.key``) in ``folder``, replacing any there."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(cert=folder / "ca.pem", key=folder / "ca.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca.key), "-out", str(ca.cert), "-days", str(days), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    ca.key.chmod(0o600)
    return ca


def make_server_certificate(
    ca: CertificateAuthority,
    folder: Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = DEFAULT_DAYS,
    stem: str = "broker",
) -> ServerCertificate:
    """Create a key and a certificate for ``hosts`` (DNS names or IP addresses) signed by ``ca``.

    Writes ``<stem>.key``, ``<stem>.pem`` and ``<stem>-keystore.pem`` (key, certificate, CA certificate: the
    form Kafka's PEM keystore reads) into ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, cert = folder / f"{stem}.key", folder / f"{stem}.csr", folder / f"{stem}.pem"
    extensions = folder / f"{stem}.ext"
    names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}",
    )  # fmt: skip
    key.chmod(0o600)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-out", str(cert), "-days", str(days), "-extfile", str(extensions),
    )  # fmt: skip
    csr.unlink()
    extensions.unlink()
    keystore = folder / f"{stem}-keystore.pem"
    fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.read_text() + cert.read_text() + ca.cert.read_text())
    return ServerCertificate(ca=ca, cert=cert, key=key, keystore=keystore)


def _openssl(*args: str) -> None:
    cmd = [find_openssl(), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CertificateError(
            f"`openssl {' '.join(args[:2])} ...` failed (exit {done.returncode}):\n{(done.stdout + done.stderr).strip()}"
        )


def _is_ip(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host
