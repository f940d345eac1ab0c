"""Parsing and checking of what a user types or configures; errors are one line."""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path

from ..core.ids import overlay_id_from_name
from ..core.wire.messages import Addr
from ..sip.auth import Credentials

log = logging.getLogger(__name__)

DEFAULT_OVERLAY = "peerphone.local"
DEFAULT_PORT = 6084  # RELOAD's registered port (RFC 6940 §14.2)
DEFAULT_SIP_PORT = 5060


class ConfigError(Exception):
    """Bad input or configuration: the command prints it on one line and exits 2."""


def sip_tls_port(text: str, sip_port: int) -> int | None:
    """--sip-tls: a port, "off" (None), or "auto": beside the SIP port (5061 beside 5060), or
    a free one when the SIP port is picked too (0)."""
    if text == "off":
        return None
    if text == "auto":
        return sip_port + 1 if 0 < sip_port < 65535 else 0
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"--sip-tls {text!r}: expected a port (0..65535), auto or off")
    return int(text)


def parse_hostport(text: str, default_port: int | None = None) -> Addr:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"{text!r}: expected HOST:PORT")
    if not port_text:
        if default_port is None:
            raise ConfigError(f"{text!r}: expected HOST:PORT")
        port = default_port
    else:
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{text!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{text!r}: port must be 0..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError:
            raise ConfigError(f"{text!r}: unknown host") from None
    return host, port


def overlay_id(name: str) -> int:
    if not name or len(name) > 253:
        raise ConfigError("overlay name must be 1..253 characters")
    return overlay_id_from_name(name)


WILDCARDS = ("0.0.0.0", "::")  # a listen address that takes every address the device has


def route_source_address(toward: Addr) -> str:
    """Our own address as seen on the path toward `toward` (no packet is sent); loopback's
    when there is no route."""
    return route_source(toward) or "127.0.0.1"


def route_source(toward: Addr) -> str | None:
    """Our own address on the path toward `toward`, or None while no route leads there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(toward)
            return str(s.getsockname()[0])
        except OSError:
            return None


def load_users(path: Path, domain: str) -> Credentials:
    """A front's users file: one `USER PASSWORD` or `sip:USER@DOMAIN PASSWORD` per line (the
    password is the rest of the line), `#` comments and blank lines ignored."""
    try:
        if path.stat().st_mode & 0o077:
            log.warning("%s: others can read these passwords (chmod 600 %s)", path, path)
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--users {path}: {getattr(e, 'strerror', None) or e}") from None
    passwords: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, password = line.strip().partition(" ")
        user = name[4:].partition("@")[0] if name.startswith("sip:") else name
        if not user or not password.strip() or (name.startswith("sip:") and "@" not in name):
            raise ConfigError(f"{path}:{number}: not `USER PASSWORD` or `sip:USER@DOMAIN PASSWORD`")
        aor = name if name.startswith("sip:") else f"sip:{user}@{domain}"
        if aor.rpartition("@")[2] != domain:
            raise ConfigError(f"{path}:{number}: {aor} is not in this front's domain {domain}")
        passwords[aor] = password.strip()
    if not passwords:
        raise ConfigError(f"--users {path}: no users in it (a front with none would register nobody)")
    return passwords


def parse_gateway(text: str) -> tuple[str, Addr]:
    """DOMAIN=HOST:PORT: the SIP proxy that serves DOMAIN."""
    domain, eq, hostport = text.partition("=")
    if not eq or not domain.strip():
        raise ConfigError(f"gateway {text!r} is not DOMAIN=HOST:PORT")
    return domain.strip().lower(), parse_hostport(hostport, DEFAULT_SIP_PORT)
