"""A node's identity in its state directory (app/identity.py): kept private, the same at
every start, and a clear error for files that are not an identity."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from peerphone.app.config import ConfigError
from peerphone.app.identity import (
    CERTIFICATE_FILE,
    HANDSET_PASSWORD_FILE,
    KEY_FILE,
    NAMES_FILE,
    REVOKED_FILE,
    ca_init,
    ca_issue,
    ca_load,
    ca_revocations,
    ca_revoke,
    handset_password,
    name_tickets,
    node_identity,
    overlay_trust,
)
from peerphone.core.revocation import Revocation
from peerphone.core.security import Trust

TRUST = Trust(work_bits=4)


def test_an_identity_is_minted_once_kept_private_and_the_same_at_the_next_start(tmp_path: Path):
    state = tmp_path / "state"
    first = node_identity(state, TRUST)
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not list(state.glob(".*"))  # nothing half-written left beside
    assert node_identity(state, TRUST).node_id == first.node_id
    assert node_identity(None, TRUST).node_id != first.node_id  # no directory: a new one each time


def test_files_that_are_not_an_identity_are_a_clear_error(tmp_path: Path):
    node_identity(tmp_path, TRUST)
    (tmp_path / KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot read this node's identity"):
        node_identity(tmp_path, TRUST)
    other = tmp_path / "other"
    node_identity(other, TRUST)
    (tmp_path / KEY_FILE).write_bytes((other / KEY_FILE).read_bytes())
    node_identity(tmp_path / "third", TRUST)
    (tmp_path / CERTIFICATE_FILE).write_bytes((tmp_path / "third" / CERTIFICATE_FILE).read_bytes())
    with pytest.raises(ConfigError, match="not the certificate of"):
        node_identity(tmp_path, TRUST)


def test_an_identity_this_overlay_does_not_accept_is_refused(tmp_path: Path):
    minted = node_identity(tmp_path, Trust(work_bits=0))
    harder = Trust(work_bits=40)  # what an id minted without the puzzle solves once in 2**40
    assert not harder.accepts(minted.credential)
    with pytest.raises(ConfigError, match="does not accept it"):
        node_identity(tmp_path, harder)


def test_an_enrolled_overlay_mints_nothing(tmp_path: Path):
    with pytest.raises(ConfigError, match="enrolled"):
        node_identity(tmp_path, Trust(authority=bytes(32)))


def test_a_phone_keeps_its_handset_password_with_its_identity(tmp_path: Path):
    first = handset_password(tmp_path)
    assert stat.S_IMODE((tmp_path / HANDSET_PASSWORD_FILE).stat().st_mode) == 0o600
    assert handset_password(tmp_path) == first  # the same key signs its AOR's record after a restart
    assert handset_password(None) not in (first, handset_password(None))  # no directory: made up each start
    (tmp_path / HANDSET_PASSWORD_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read the handset's password"):
        handset_password(tmp_path)


def test_the_authority_revokes_only_its_own_certificates_and_keeps_the_list(tmp_path: Path):
    ca, other = tmp_path / "ca", tmp_path / "other"
    ca_init(ca)
    ca_init(other)
    kit = ca_issue(ca, tmp_path / "kit", ())
    stranger = ca_issue(other, tmp_path / "stranger", ())
    assert node_identity(ca, overlay_trust(ca)).credential.issuer_key == ca_load(ca).public_key  # its own node
    added, listed = ca_revoke(ca, [format(kit.credential.serial, "x")])
    assert added == listed == [Revocation.of(kit.credential)]
    added, listed = ca_revoke(ca, [str(tmp_path / "kit" / CERTIFICATE_FILE)])  # the same, as a file
    assert added == [] and listed == [Revocation.of(kit.credential)]
    assert ca_revocations(ca) == listed
    with pytest.raises(ConfigError, match="not a certificate this authority issued"):
        ca_revoke(ca, [str(tmp_path / "stranger" / CERTIFICATE_FILE)])
    with pytest.raises(ConfigError, match="no certificate of that serial"):
        ca_revoke(ca, [format(stranger.credential.serial, "x")])
    (ca / REVOKED_FILE).write_text("not hex at all\n")
    with pytest.raises(ConfigError, match=r"revoked:1: not `SERIAL NODE-ID KEY`"):
        ca_revocations(ca)


def test_the_authority_s_tickets_are_kept_with_the_node_and_anything_else_is_a_clear_error(tmp_path: Path):
    ca_init(tmp_path / "ca")
    bob, mallory = "sip:bob@peerphone.local", "sip:mallory@peerphone.local"
    identity = ca_issue(tmp_path / "ca", tmp_path / "kit", (bob,))
    trust = overlay_trust(tmp_path / "kit")
    tickets = name_tickets(tmp_path / "kit", identity, trust)
    assert tickets is not None and list(tickets) == [bob] and tickets[bob].public_key == identity.public_key
    assert name_tickets(None, identity, Trust()) is None  # ad hoc: no names of its own, first come
    with pytest.raises(ConfigError, match="expected sip:USER@DOMAIN"):
        ca_issue(tmp_path / "ca", tmp_path / "other", ("bob",))
    other = ca_issue(tmp_path / "ca", tmp_path / "other", (mallory,))
    names = tmp_path / "kit" / NAMES_FILE
    theirs = (tmp_path / "other" / NAMES_FILE).read_text()
    for text in ("garbage\n", f"{bob} zz\n", theirs, theirs.replace(mallory, bob)):
        names.write_text(text)  # unreadable, not hex, another key's ticket, another name's
        with pytest.raises(ConfigError, match=NAMES_FILE):
            name_tickets(tmp_path / "kit", identity, trust)
    names.unlink()
    assert name_tickets(tmp_path / "kit", identity, trust) == {}  # a node with no names serves others
    assert other.node_id != identity.node_id
