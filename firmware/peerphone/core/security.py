"""Who a node is, and who may be what (DESIGN.md, Security; RFC 6940 §13).

Every node has an Ed25519 key pair and an X.509 certificate that binds its node id and
the user names (AORs) it may act for. An overlay's `Trust` says which certificates count:

- ad hoc (the default): self-signed; the node id is the SHA-1 of the public key, so it
  cannot be chosen, and SHA-1 of that id must start with `work_bits` zero bits (the static
  puzzle of S/Kademlia): each identity costs about 2**work_bits key pairs to mint, and
  aiming one at a chosen part of the ring costs that many times the overlay's size;
- enrolled: issued by the overlay's enrollment authority, which assigns the node id.

Certificates come from the network: `read_certificate` turns any bytes into a
`Credential` or None, never an exception. Randomness is passed in (`entropy`), as
everywhere in the core.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import msgpack
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .ids import ID_BITS, id_from_hex, id_from_name, id_to_bytes
from .ingress import BoundedLru
from .limits import CERTIFICATE_BYTES_MAX, CREDENTIALS_CACHED_MAX, URI_CHARS_MAX
from .wire.messages import DataModel, Entry, Seal

Entropy = Callable[[int], bytes]

NODE_URI = "urn:peerphone:node:"  # the certificate's SAN that carries the node id
_FOREVER = (datetime.datetime(2000, 1, 1), datetime.datetime(9999, 12, 31, 23, 59, 59))  # RFC 5280 §4.1.2.5
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_NAMES_MAX = 16


@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate as the overlay reads it. `issuer_key` is the raw key that signed it
    (the node's own for a self-signed one)."""

    node_id: int
    names: tuple[str, ...]
    public_key: bytes
    issuer_key: bytes
    serial: int
    der: bytes


def read_certificate(der: bytes) -> Credential | None:
    """The credential in `der` if it is a well-formed Ed25519 certificate whose signature
    holds for the key it names as issuer; None for anything else."""
    if not isinstance(der, bytes) or len(der) > CERTIFICATE_BYTES_MAX:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey):
            return None
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        issuer = _issuer_key(cert, key)
        if issuer is None:
            return None
        Ed25519PublicKey.from_public_bytes(issuer).verify(cert.signature, cert.tbs_certificate_bytes)
        serial = cert.serial_number
    except Exception:  # the library raises many types (InvalidVersion, UnsupportedAlgorithm, ...): all mean "not one"
        return None
    node_ids = [id_from_hex(u[len(NODE_URI):]) for u in uris if u.startswith(NODE_URI)]
    names = tuple(u for u in uris if not u.startswith(NODE_URI))
    if len(node_ids) != 1 or node_ids[0] is None or len(names) > _NAMES_MAX or any(
            len(n) > URI_CHARS_MAX for n in names):
        return None
    return Credential(node_ids[0], names, key.public_bytes(*_RAW), issuer, serial, der)


def _issuer_key(cert: x509.Certificate, subject_key: Ed25519PublicKey) -> bytes | None:
    """Self-signed: the subject's key; issued: the authority's, which the certificate names
    in its Authority Key Identifier (the raw key itself: Ed25519 keys are that short)."""
    if cert.issuer == cert.subject:
        return subject_key.public_bytes(*_RAW)
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    return aki if aki is not None and len(aki) == 32 else None


def id_of_key(public_key: bytes) -> int:
    """An ad-hoc node id: the SHA-1 of the raw public key, as a resource id is of its name."""
    return id_from_name(public_key)


def puzzle_solved(node_id: int, work_bits: int) -> bool:
    """The SHA-1 of the id starts with `work_bits` zero bits (S/Kademlia's static puzzle)."""
    return id_from_name(id_to_bytes(node_id)) >> (ID_BITS - work_bits) == 0


@dataclass(frozen=True)
class Trust:
    """Which certificates an overlay admits. `authority`: the enrollment authority's raw
    public key (None: ad hoc). `work_bits`: the ad-hoc puzzle's difficulty."""

    authority: bytes | None = None
    work_bits: int = 12
    _verified: BoundedLru[bytes, Credential] = field(
        default_factory=lambda: BoundedLru(CREDENTIALS_CACHED_MAX), compare=False, repr=False, hash=False)

    @property
    def enrolled(self) -> bool:
        return self.authority is not None

    def admit(self, der: bytes) -> Credential | None:
        """The credential of `der` if this overlay accepts it, else None."""
        cred = self._verified.get(der)
        if cred is None:
            cred = read_certificate(der)
            if cred is None:
                return None
            self._verified.put(der, cred)
        return cred if self.accepts(cred) else None

    def accepts(self, cred: Credential) -> bool:
        if self.authority is not None:
            return cred.issuer_key == self.authority  # and not revoked: each node's `Revoked` says
        return (cred.issuer_key == cred.public_key and cred.node_id == id_of_key(cred.public_key)
                and puzzle_solved(cred.node_id, self.work_bits))


class Identity:
    """A node's private key and its certificate."""

    def __init__(self, key: Ed25519PrivateKey, certificate: bytes) -> None:
        cred = read_certificate(certificate)
        if cred is None or cred.public_key != key.public_key().public_bytes(*_RAW):
            raise ValueError("the certificate is not this key's")
        self.key = key
        self.credential = cred

    @property
    def node_id(self) -> int:
        return self.credential.node_id

    @property
    def certificate(self) -> bytes:
        return self.credential.der

    @property
    def public_key(self) -> bytes:
        return self.credential.public_key

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    @classmethod
    def ad_hoc(cls, entropy: Entropy, work_bits: int, names: tuple[str, ...] = ()) -> "Identity":
        """A fresh self-signed identity whose node id solves the puzzle."""
        while True:
            key = Ed25519PrivateKey.from_private_bytes(entropy(32))
            node_id = id_of_key(key.public_key().public_bytes(*_RAW))
            if puzzle_solved(node_id, work_bits):
                return cls(key, _certificate(key.public_key(), node_id, names, key, None, entropy))


class Authority:
    """An enrollment authority: it assigns node ids and signs certificates, offline."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.public_key = key.public_key().public_bytes(*_RAW)

    def sign(self, data: bytes) -> bytes:
        """A `Signer`: it seals the overlay's revocations (revocation.py)."""
        return self.key.sign(data)

    def issue(self, public_key: bytes, node_id: int, names: tuple[str, ...], entropy: Entropy) -> bytes:
        subject = Ed25519PublicKey.from_public_bytes(public_key)
        return _certificate(subject, node_id, names, self.key, self.public_key, entropy)

    def enroll(self, entropy: Entropy, names: tuple[str, ...] = (), node_id: int | None = None) -> Identity:
        """A key pair and its certificate in one step (tests, and `ca issue` for a new node)."""
        key = Ed25519PrivateKey.from_private_bytes(entropy(32))
        chosen = node_id if node_id is not None else int.from_bytes(entropy(ID_BITS // 8), "big")
        return Identity(key, self.issue(key.public_key().public_bytes(*_RAW), chosen, names, entropy))


def _certificate(subject: Ed25519PublicKey, node_id: int, names: tuple[str, ...], signer: Ed25519PrivateKey,
                 authority: bytes | None, entropy: Entropy) -> bytes:
    node_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, format(node_id, "040x"))])
    issuer = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "peerphone enrollment")]) if authority \
        else node_name
    sans = [x509.UniformResourceIdentifier(NODE_URI + format(node_id, "x"))]
    sans += [x509.UniformResourceIdentifier(n) for n in names]
    builder = (x509.CertificateBuilder().subject_name(node_name).issuer_name(issuer).public_key(subject)
               .serial_number(int.from_bytes(entropy(16), "big") >> 1 or 1)
               .not_valid_before(_FOREVER[0]).not_valid_after(_FOREVER[1])
               .add_extension(x509.SubjectAlternativeName(sans), critical=False))
    if authority is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(authority, None, None), critical=False)
    return builder.sign(signer, None).public_bytes(serialization.Encoding.DER)


def link_certificate(identity: Identity, link_key: EllipticCurvePublicKey, entropy: Entropy) -> bytes:
    """A certificate for a link key, issued by the node's own key: DTLS 1.2 (net/links.py) signs
    its handshakes with ECDSA, not Ed25519, so a node vouches for a P-256 key of its own."""
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, format(identity.node_id, "040x"))])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(link_key)
            .serial_number(int.from_bytes(entropy(16), "big") >> 1 or 1)
            .not_valid_before(_FOREVER[0]).not_valid_after(_FOREVER[1])
            .add_extension(x509.AuthorityKeyIdentifier(identity.public_key, None, None), critical=False)
            .sign(identity.key, None).public_bytes(serialization.Encoding.DER))


def link_certified(link_der: bytes, node: Credential) -> bool:
    """`link_der` is a certificate the node of `node` issued with its own key."""
    if not isinstance(link_der, bytes) or len(link_der) > CERTIFICATE_BYTES_MAX:
        return False
    try:
        cert = x509.load_der_x509_certificate(link_der)
        Ed25519PublicKey.from_public_bytes(node.public_key).verify(cert.signature, cert.tbs_certificate_bytes)
    except Exception:  # as read_certificate: whatever the library raises, it is not one
        return False
    return True


def proof_challenge(overlay_id: int, txid: int, asker: int, answerer: int) -> bytes:
    """What a PROVE's answerer signs: bound to the overlay, the asker's nonce and both ids,
    so it proves nothing anywhere else."""
    return f"peerphone proof {overlay_id:x} {txid:x} {asker:x} {answerer:x}".encode()


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer(Protocol):
    """What seals stored values: a node's `Identity`, or a user's `SigningKey`."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class SigningKey:
    """A key that is not a node's: a user's, which every front holding the user's password
    derives alike (`sip.auth.user_key`)."""

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(*_RAW)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def seal(entry: Entry, overlay_id: int, resource: int, kind: int, model: DataModel, signer: Signer) -> Entry:
    """`entry` signed by `signer` (RFC 6940 §7.1: over where it is stored and what it holds,
    here with the lifetime the writer gave it)."""
    data = _sealed_part(entry, overlay_id, resource, kind, model, signer.public_key, entry.lifetime_s)
    return replace(entry, seal=Seal(signer.public_key, entry.lifetime_s, signer.sign(data)))


VerifiedSeals = BoundedLru[bytes, bool]
"""Signatures verified before (seals, and the authority's name tickets), by a SHA-256 of the
key, what it signs and the signature: a record fetched again (a front looks Bob up for
every call) or pushed to a replica again costs no second Ed25519 verification (84 µs here)."""


def seal_holds(entry: Entry, overlay_id: int, resource: int, kind: int, model: DataModel,
               verified: VerifiedSeals | None = None) -> bool:
    """`entry` carries a valid signature of its signer over it, and a lifetime no longer than
    the one signed (a replica counts it down, never up)."""
    s = entry.seal
    if s is None or entry.lifetime_s > s.lifetime_s:
        return False
    return verify_once(s.signer, s.signature, _sealed_part(entry, overlay_id, resource, kind, model, s.signer,
                                                            s.lifetime_s), verified)


def verify_once(public_key: bytes, signature: bytes, data: bytes, verified: VerifiedSeals | None) -> bool:
    """`verify`, remembered in `verified` when it holds: the same signature seen again is free."""
    if verified is None:
        return verify(public_key, signature, data)
    digest = hashlib.sha256(public_key + data + signature).digest()
    if verified.get(digest):
        return True
    holds = verify(public_key, signature, data)
    if holds:
        verified.put(digest, True)
    return holds


def _sealed_part(entry: Entry, overlay_id: int, resource: int, kind: int, model: DataModel, signer: bytes,
                 lifetime_s: int) -> bytes:
    # An array's index is the storing peer's choice (appends): not the writer's to sign.
    key = None if model is DataModel.ARRAY else entry.key
    packed: bytes = msgpack.packb(["peerphone value", overlay_id, id_to_bytes(resource), kind, key, entry.value,
                                   entry.storage_time_ms, lifetime_s, signer])
    return packed
