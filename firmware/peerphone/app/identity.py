"""A node's identity on disk: its private key (0600) and certificate in the state directory,
and the enrollment authority's side of it (`peerphone ca`).

Without a state directory (a demo, a test, a one-shot command) a node mints a fresh ad-hoc
identity each time it starts. With one (`--state-dir`, or systemd's STATE_DIRECTORY on the
Pi image) it mints once and keeps it, so a phone keeps its node id across restarts.

A state directory that holds `authority.pub` belongs to an enrolled overlay: its node
admits only certificates that authority signed, and its own came from `peerphone ca issue`
(copied in with the key, the certificate, `authority.pub` and `names`: the authority's
ticket for each user name the certificate carries, core/names.py).

The authority's own directory keeps its key, a copy of every certificate it issued
(`issued/SERIAL.crt`), the list of those it revoked (`revoked`), and a node identity of its
own, so that it is a state directory too: `ca revoke --via` stores through the overlay
from there.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..core.ids import id_from_hex, id_from_name, short
from ..core.limits import ENTRIES_PER_RESOURCE_MAX, PUBLIC_KEY_BYTES
from ..core.names import TICKET_BYTES, NameTicket, issue_ticket
from ..core.revocation import Revocation
from ..core.security import Authority, Identity, Trust, read_certificate
from .config import ConfigError

log = logging.getLogger(__name__)

KEY_FILE = "node.key"
CERTIFICATE_FILE = "node.crt"
AUTHORITY_FILE = "authority.pub"  # in a node's state directory: the overlay is enrolled
AUTHORITY_KEY_FILE = "authority.key"  # in the authority's own directory
ISSUED_DIR = "issued"  # in the authority's directory: SERIAL.crt of each certificate it issued
REVOKED_FILE = "revoked"  # in the authority's directory: one revocation a line (serial, node id, key)
HANDSET_PASSWORD_FILE = "handset.password"  # a phone's own front and handset share it
NAMES_FILE = "names"  # in an enrolled node's state directory: `AOR TICKET` a line, as `ca issue` wrote them


def default_state_dir() -> Path | None:
    """systemd's StateDirectory= (the first one), if the service has one."""
    found = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(found) if found else None


def overlay_trust(state_dir: Path | None) -> Trust:
    """Enrolled when the state directory names an authority, else ad hoc."""
    if state_dir is None or not (state_dir / AUTHORITY_FILE).exists():
        return Trust()
    try:
        key = serialization.load_pem_public_key((state_dir / AUTHORITY_FILE).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{state_dir / AUTHORITY_FILE}: not an authority's public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{state_dir / AUTHORITY_FILE}: not an Ed25519 key")
    return Trust(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


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


def name_tickets(state_dir: Path | None, identity: Identity, trust: Trust) -> dict[str, NameTicket] | None:
    """The names this node may register and the authority's ticket for each (an enrolled
    overlay; None: ad hoc, where names are first come, first served). A ticket that does
    not hold (another key's, another authority's, edited) is a configuration error."""
    if not trust.enrolled:
        return None
    assert state_dir is not None and trust.authority is not None  # an enrolled node has a state directory
    path = state_dir / NAMES_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}  # a node with no names: a peer that serves others, or one issued before tickets
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    tickets = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        try:
            name, ticket = fields[0], NameTicket(identity.public_key, bytes.fromhex(fields[1]))
        except (IndexError, ValueError):
            raise ConfigError(f"{path}:{number}: not `sip:USER@DOMAIN TICKET`") from None
        if len(fields) != 2 or len(ticket.ticket) != TICKET_BYTES \
                or not ticket.holds(trust.authority, id_from_name(name)):
            raise ConfigError(f"{path}:{number}: not this node's ticket for {name} from the overlay's authority")
        tickets[name] = ticket
    return tickets


def _mint(trust: Trust) -> Identity:
    if trust.enrolled:
        raise ConfigError("this overlay is enrolled: its authority issues node identities (peerphone ca issue), "
                          "and --state-dir names where they are")
    started = time.monotonic()
    identity = Identity.ad_hoc(os.urandom, trust.work_bits)
    log.info("minted node id %s in %.1f s", short(identity.node_id), time.monotonic() - started)
    return identity


def _save(state_dir: Path, identity: Identity, authority: bytes | None = None) -> None:
    files = [(CERTIFICATE_FILE, _pem_certificate(identity), 0o644), (KEY_FILE, _pem_private(identity.key), 0o600)]
    if authority is not None:
        files.append((AUTHORITY_FILE, _pem_public(authority), 0o644))
    _write_files(state_dir, files, "this node's identity")


def handset_password(state_dir: Path | None) -> str:
    """The password a phone with its own peer makes up for its handset and front. Kept in the
    state directory: the overlay's record of the phone's AOR is signed with a key derived
    from it, so a phone that forgot it would be refused its own AOR until the record expired."""
    if state_dir is None:
        return secrets.token_urlsafe(18)
    path = state_dir / HANDSET_PASSWORD_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the handset's password ({getattr(e, 'strerror', None) or e})") \
            from None
    if kept:
        return kept
    password = secrets.token_urlsafe(18)
    _write_files(state_dir, [(HANDSET_PASSWORD_FILE, password.encode() + b"\n", 0o600)], "the handset's password")
    return password


def _write_files(directory: Path, files: list[tuple[str, bytes, int]], what: str) -> None:
    """Each written beside, then renamed: a process stopped halfway never finds half a key."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, data, mode in files:
            tmp = directory / f".{name}.new"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, directory / name)
    except OSError as e:
        raise ConfigError(f"{directory}: cannot keep {what} there: {e.strerror or e}") from None


def _pem_certificate(identity: Identity) -> bytes:
    return x509.load_der_x509_certificate(identity.certificate).public_bytes(serialization.Encoding.PEM)


def _pem_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_public(raw: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo)


# -- the enrollment authority (peerphone ca) --

def ca_init(directory: Path) -> Authority:
    if (directory / AUTHORITY_KEY_FILE).exists():
        raise ConfigError(f"{directory}: an authority is there already (its key would be lost)")
    authority = Authority(Ed25519PrivateKey.generate())
    _write_files(directory, [(AUTHORITY_KEY_FILE, _pem_private(authority.key), 0o600),
                             (AUTHORITY_FILE, _pem_public(authority.public_key), 0o644)], "the authority")
    _save(directory, authority.enroll(os.urandom), authority.public_key)  # its own node, for `ca revoke --via`
    return authority


def ca_load(directory: Path) -> Authority:
    try:
        key = serialization.load_pem_private_key((directory / AUTHORITY_KEY_FILE).read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{directory}: no authority here ({getattr(e, 'strerror', None) or e}); "
                          "peerphone ca init makes one") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{directory / AUTHORITY_KEY_FILE}: not an Ed25519 key")
    return Authority(key)


def ca_issue(directory: Path, state_dir: Path, names: tuple[str, ...]) -> Identity:
    """A new node's key and certificate (a random node id), with the authority's public key,
    written to the node's state directory."""
    authority = ca_load(directory)
    if (state_dir / KEY_FILE).exists():
        raise ConfigError(f"{state_dir}: a node's key is there already (move it away to issue a new one)")
    for name in names:  # as a front writes an AOR or a gateway's name: its tickets are for exactly these strings
        if not re.fullmatch(r"sip:[^@\s;:<>]+@[^@\s;:<>]+|sip-gateway:[^@\s;:<>]+", name):
            raise ConfigError(f"--name {name!r}: expected sip:USER@DOMAIN")
    identity = authority.enroll(os.urandom, names)
    _save(state_dir, identity, authority.public_key)
    tickets = "".join(f"{name} {issue_ticket(authority, name, identity.public_key).hex()}\n" for name in names)
    _write_files(state_dir, [(NAMES_FILE, tickets.encode(), 0o644)], "the authority's tickets for its names")
    _write_files(directory / ISSUED_DIR, [(f"{identity.credential.serial:x}.crt", _pem_certificate(identity), 0o644)],
                 "a copy of the certificate")
    return identity


def ca_revoke(directory: Path, which: list[str]) -> tuple[list[Revocation], list[Revocation]]:
    """Add the certificates `which` names (a serial as `ca issue` printed it, or a certificate
    file) to the authority's list: those new to it, and the whole list (to store in the overlay)."""
    authority = ca_load(directory)
    if not (directory / KEY_FILE).exists():  # an authority made before it had a node of its own
        _save(directory, authority.enroll(os.urandom), authority.public_key)
    revoked = ca_revocations(directory)
    added = []
    for name in which:
        credential = read_certificate(_certificate_der(directory, name))
        if credential is None or credential.issuer_key != authority.public_key:
            raise ConfigError(f"{name}: not a certificate this authority issued")
        if all(r.serial != credential.serial for r in revoked):
            added.append(Revocation.of(credential))
            revoked.append(added[-1])
    if len(revoked) > ENTRIES_PER_RESOURCE_MAX:
        raise ConfigError(f"an overlay keeps at most {ENTRIES_PER_RESOURCE_MAX} revocations: an authority that "
                          "withdrew more should start a new overlay (ca init) and enroll the others again")
    lines = "".join(f"{r.serial:x} {r.node_id:x} {r.public_key.hex()}\n" for r in revoked)
    _write_files(directory, [(REVOKED_FILE, lines.encode(), 0o644)], "the list of revocations")
    return added, revoked


def ca_revocations(directory: Path) -> list[Revocation]:
    path = directory / REVOKED_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    revoked = []
    for number, line in enumerate(text.splitlines(), 1):
        revocation = _revocation_line(line)
        if revocation is None:
            raise ConfigError(f"{path}:{number}: not `SERIAL NODE-ID KEY` in hex")
        revoked.append(revocation)
    return revoked


def _revocation_line(line: str) -> Revocation | None:
    fields = line.split()
    if len(fields) != 3:
        return None
    try:
        serial, key = int(fields[0], 16), bytes.fromhex(fields[2])
    except ValueError:
        return None
    node_id = id_from_hex(fields[1])
    return Revocation(serial, node_id, key) if node_id is not None and len(key) == PUBLIC_KEY_BYTES else None


def _certificate_der(directory: Path, name: str) -> bytes:
    path = Path(name) if name.endswith(".crt") else directory / ISSUED_DIR / f"{name.lower().removeprefix('0x')}.crt"
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no certificate of that serial in {directory / ISSUED_DIR} (give the node's "
                          "node.crt instead)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a certificate ({getattr(e, 'strerror', None) or e})") from None
