"""A node's identity on disk: its private key (0600) and certificate in the state directory.

Without a state directory (a demo, a test, a one-shot command) a node mints a fresh ad-hoc
identity each time it starts. With one (`--state-dir`, or systemd's STATE_DIRECTORY on the
Pi image) it mints once and keeps it, so a phone keeps its node id across restarts.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..core.ids import short
from ..core.security import Identity, Trust
from .config import ConfigError

log = logging.getLogger(__name__)

KEY_FILE = "node.key"
CERTIFICATE_FILE = "node.crt"


def default_state_dir() -> Path | None:
    """systemd's StateDirectory= (the first one), if the service has one."""
    found = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(found) if found else None


def node_identity(state_dir: Path | None, trust: Trust) -> Identity:
    if state_dir is None:
        return _mint(trust)
    key_path, cert_path = state_dir / KEY_FILE, state_dir / CERTIFICATE_FILE
    if not key_path.exists():
        identity = _mint(trust)
        _save(state_dir, identity)
        return identity
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{state_dir}: cannot read this node's identity ({e}); move {KEY_FILE} and "
                          f"{CERTIFICATE_FILE} away to mint a new one") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_path}: not an Ed25519 key")
    try:
        identity = Identity(key, der)
    except ValueError:
        raise ConfigError(f"{cert_path}: not the certificate of {key_path}") from None
    if not trust.accepts(identity.credential):
        raise ConfigError(f"{cert_path}: this overlay does not accept it (another overlay's, or an ad-hoc "
                          "identity of an older puzzle); move it away to mint a new one")
    return identity


def _mint(trust: Trust) -> Identity:
    if trust.enrolled:
        raise ConfigError("this overlay is enrolled: its authority issues node identities (peerphone ca issue), "
                          "and --state-dir names where they are")
    started = time.monotonic()
    identity = Identity.ad_hoc(os.urandom, trust.work_bits)
    log.info("minted node id %s in %.1f s", short(identity.node_id), time.monotonic() - started)
    return identity


def _save(state_dir: Path, identity: Identity) -> None:
    """Written beside, then renamed: a node stopped halfway never finds half a key."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem_key = identity.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        pem_cert = x509.load_der_x509_certificate(identity.certificate).public_bytes(serialization.Encoding.PEM)
        for name, data, mode in ((CERTIFICATE_FILE, pem_cert, 0o644), (KEY_FILE, pem_key, 0o600)):
            tmp = state_dir / f".{name}.new"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, state_dir / name)
    except OSError as e:
        raise ConfigError(f"{state_dir}: cannot keep this node's identity there: {e.strerror or e}") from None
