"""`peerphone device FILE`: a flashed phone, set up by one file a person edits on any computer.

The image (`tools/image`) puts `peerphone.toml` on the SD card's FAT partition and its systemd
unit runs this command on it. A mistake in the file is one line naming the file and the key,
and exit status 2, which the unit does not restart: the phone stays stopped, the console and
the journal say why, and the person fixes the file.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from ..core.limits import Timing
from ..core.overlay import Topology
from ..sip.ua import RTP_PORTS
from .config import DEFAULT_OVERLAY, DEFAULT_PORT, DEFAULT_SIP_PORT, ConfigError, parse_hostport
from .identity import default_state_dir
from .phonecmd import phone, sip_uri

KEYS = {"aor", "overlay", "bootstrap", "board", "advertise", "port", "sip_port", "rtp_port", "topology", "role"}
ROLES = ("auto", "peer", "client")


def board_dir() -> Path:
    """Where the image installs the board files (`board/*.toml` of the checkout)."""
    return Path(sys.prefix) / "share" / "peerphone" / "board"


def load(path: Path) -> argparse.Namespace:
    """The device file as the arguments of `peerphone phone`; ConfigError on the first mistake."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (the image's FAT partition holds it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not TOML: {e}") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: no such setting (there are: {', '.join(sorted(KEYS))})")

    def text(key: str, default: str | None = None) -> str | None:
        value = data.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{path}: {key}: expected a string in quotes, got {value!r}")
        return value

    def port(key: str, default: int | None) -> int | None:
        value = data.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535):
            raise ConfigError(f"{path}: {key}: expected a port number (0: any free one), got {value!r}")
        return value

    def checked(key: str, check: Any, value: str) -> None:
        try:
            check(value)
        except ConfigError as e:
            raise ConfigError(f"{path}: {key}: {e}") from None

    aor = text("aor")
    if aor is None:
        raise ConfigError(f"{path}: aor: missing (this phone's address, like aor = \"sip:alice@peerphone.local\")")
    checked("aor", lambda v: sip_uri(v, "the address"), aor)
    bootstrap = data.get("bootstrap", [])
    if not isinstance(bootstrap, list) or not all(isinstance(b, str) for b in bootstrap):
        raise ConfigError(f"{path}: bootstrap: expected a list of \"HOST:PORT\" strings, got {bootstrap!r}")
    for peer in bootstrap:
        checked("bootstrap", lambda v: parse_hostport(v, DEFAULT_PORT), peer)
    advertise = text("advertise")
    if advertise is not None:
        checked("advertise", lambda v: parse_hostport(v, 0), advertise)
    topology = text("topology", Topology.CHORD.value)
    if topology not in {t.value for t in Topology}:
        raise ConfigError(f"{path}: topology: one of {', '.join(t.value for t in Topology)}, not {topology!r}")
    role = text("role", "auto")
    if role not in ROLES:
        raise ConfigError(f"{path}: role: one of {', '.join(ROLES)}, not {role!r}")
    rtp_port = port("rtp_port", None)
    if rtp_port is not None and rtp_port + RTP_PORTS > 65536:
        raise ConfigError(f"{path}: rtp_port: {RTP_PORTS} ports from {rtp_port} go past 65535")
    return argparse.Namespace(
        aor=aor, overlay=text("overlay", DEFAULT_OVERLAY), bootstrap=bootstrap, advertise=advertise,
        listen=f"0.0.0.0:{port('port', DEFAULT_PORT)}", sip_listen=f"0.0.0.0:{port('sip_port', DEFAULT_SIP_PORT)}",
        rtp_port=rtp_port, topology=topology, board=_board(path, text("board")), role=role,
        proxy=None, record_dir=None, watch=[], sip_transport="udp", sip_tunnel=False, domain=None, gateway=[],
        users=None, password_file=None, srtp="optional",
        maintenance_ms=Timing().maintenance_interval_ms, state_dir=default_state_dir())


def _board(path: Path, name: str | None) -> Path | None:
    """A board by name (one the image installed) or by path (beside the device file)."""
    if name is None:
        return None
    if "/" in name or name.endswith(".toml"):
        found = path.parent / name
    else:
        found = board_dir() / f"{name}.toml"
    if not found.is_file():
        known = sorted(p.stem for p in board_dir().glob("*.toml"))
        raise ConfigError(f"{path}: board: no board {name!r} (there are: {', '.join(known) or 'none installed'})")
    return found


async def device(args: argparse.Namespace) -> int:
    return await phone(load(args.file))
