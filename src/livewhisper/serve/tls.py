"""A self-signed certificate for serving a LAN over https.

A browser on another machine gives a page the microphone only in a secure context,
so a LAN server needs https. The certificate is made with the ``openssl`` command
(no Python dependency), kept in the user's cache directory, and reused while it is
valid and covers the same host names.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from livewhisper.errors import LivewhisperError

DAYS = 397  # the longest validity browsers accept for a server certificate


class TLSError(LivewhisperError):
    """A certificate could not be made or loaded."""


@dataclass(frozen=True)
class Certificate:
    certfile: Path
    keyfile: Path
    names: tuple[str, ...]
    fingerprint: str  # SHA-256 of the DER certificate, as browsers show it


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livewhisper" / "tls"


def local_names(host: str) -> list[str]:
    """Names a browser might use to reach this machine: loopback, host name, LAN address."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if host not in ("", "0.0.0.0", "::"):
        names.append(host)
    with contextlib.suppress(OSError):
        # The address of the interface that routes outward; nothing is sent.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            names.append(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.append(str(info[4][0]))
    out: list[str] = []
    for name in names:
        name = name.split("%")[0]  # IPv6 zone
        if name and name not in out:
            out.append(name)
    return out


def self_signed(names: Iterable[str], directory: Path | None = None) -> Certificate:
    """A certificate and key for *names*, made with ``openssl`` or reused from the cache."""
    names = tuple(dict.fromkeys(names))
    directory = directory or cache_dir()
    certfile, keyfile, meta = (
        directory / "cert.pem",
        directory / "key.pem",
        directory / "names.json",
    )
    if certfile.exists() and keyfile.exists() and meta.exists():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads(meta.read_text())
            if saved.get("names") == list(names) and saved.get("expires", 0) > time.time() + 86400:
                return Certificate(certfile, keyfile, names, fingerprint(certfile))
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError(
            "Making a self-signed certificate needs the openssl command: install it "
            "(apt install openssl) or pass --certfile and --keyfile."
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    san = ",".join(f"{'IP' if _is_ip(n) else 'DNS'}:{n}" for n in names)
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        str(DAYS),
        "-subj",
        "/CN=livewhisper (self-signed)",
        "-addext",
        f"subjectAltName={san}",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
        str(keyfile),
        "-out",
        str(certfile),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise TLSError(f"openssl could not make a certificate ({detail}).")
    os.chmod(keyfile, 0o600)
    meta.write_text(json.dumps({"names": list(names), "expires": time.time() + DAYS * 86400}))
    return Certificate(certfile, keyfile, names, fingerprint(certfile))


def fingerprint(certfile: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(certfile.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def server_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """The TLS context of a server with this certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


def check_pair(certfile: str, keyfile: str | None) -> None:
    """Raise TLSError with a sentence if the certificate and key cannot be loaded."""
    try:
        server_context(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(
            f"Cannot use the certificate {certfile}"
            + (f" with the key {keyfile}" if keyfile else "")
            + f" ({getattr(exc, 'strerror', None) or exc}); check the files and that the "
            "key matches."
        ) from exc


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
