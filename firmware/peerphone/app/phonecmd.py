"""`peerphone phone`, `call` and `message`: the handset, with or without a peer of its own."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import shlex
import stat
import sys
import tempfile
import wave
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from ..hw.audio import set_levels
from ..hw.board import load as load_board
from ..hw.gpio import HardwareError, Panel, pin_factory
from ..net.sip_transport import SipTransport
from ..net.supervisor import Supervisor
from ..sip.message import SipParseError
from ..sip.ua import IDLE_POLL_S, POLL_S, CallReport, Handset, HandsetError, SoundDevices
from ..sip.uri import Uri
from .config import WILDCARDS, ConfigError, load_users, parse_hostport, route_source_address
from .deskphone import Deskphone, terminal
from .identity import handset_password, name_tickets, node_identity, overlay_trust
from .mobility import Address
from .tone import write_tone
from .wiring import start_peer

log = logging.getLogger("peerphone.phone")


def sip_uri(text: str, what: str) -> Uri:
    try:
        uri = Uri.parse(text)
    except SipParseError:
        raise ConfigError(f"{what} {text!r} is not a sip: URI like sip:bob@peerphone.local") from None
    if uri.user is None:
        raise ConfigError(f"{what} {text!r} has no user part (sip:USER@DOMAIN)")
    return uri


def _password(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--password-file {path}: {getattr(e, 'strerror', None) or e}") from None
    password = lines[0].strip() if lines else ""
    if not password:
        raise ConfigError(f"--password-file {path}: empty (the password is its first line)")
    return password


def _check_wav(path: Path) -> None:
    """pjmedia plays 16-bit PCM WAV; anything else would be a silent call."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnframes() == 0:
                raise ConfigError(f"{path}: not 16-bit PCM audio (convert it: sox {path} -b 16 out.wav)")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (wave.Error, EOFError, OSError) as e:
        raise ConfigError(f"{path}: not a WAV file ({str(e) or 'too short'})") from None


def _named_or_ad_hoc(aor: str, state_dir: Path | None) -> None:
    """In an enrolled overlay, this node's certificate must name the phone's AOR: said before
    the node joins (its front would be refused the registration)."""
    trust = overlay_trust(state_dir)
    tickets = name_tickets(state_dir, node_identity(state_dir, trust), trust) if trust.enrolled else None
    if tickets is not None and aor not in tickets:
        raise ConfigError(f"this node's certificate does not name {aor}: the overlay's authority issues one that "
                          f"does (peerphone ca issue --name {aor})")


def _local_address(proxy: tuple[str, int]) -> str:
    """Where the handset listens: loopback for a front on this machine, else the address that
    routes to the front (what the front and the far end can send to)."""
    return proxy[0] if proxy[0].startswith("127.") else route_source_address(proxy)


def _me(args: argparse.Namespace, callee: Uri) -> str:
    if args.aor:
        return sip_uri(args.aor, "--aor").aor
    return f"sip:{getpass.getuser()}@{callee.host}"


async def phone(args: argparse.Namespace) -> int:
    aor = sip_uri(args.aor, "--aor")
    board = load_board(args.board) if args.board else None  # its mistakes before anything starts
    try:
        pins = pin_factory(board) if board is not None and not board.terminal and not board.answers_itself else None
    except HardwareError as e:
        raise ConfigError(str(e)) from None
    if board is not None:
        set_levels(board)  # each level set, or skipped with a log line
    record_dir = Path(args.record_dir) if args.record_dir else None
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor()
    backups: list[tuple[str, int]] = []
    front: SipTransport | None = None
    address: Address | None = None
    password = _password(args.password_file) if args.password_file else None
    if args.proxy:
        proxy, *backups = [parse_hostport(p, 5060) for p in args.proxy]
    else:
        args.domain = args.domain or aor.host
        users = load_users(args.users, args.domain) if args.users else None
        if users is None:  # the front registers its own handset only, with a password nobody else has
            password = password or handset_password(args.state_dir)
            users = {aor.aor: password}
        elif password is None:
            password = users.get(aor.aor)
            if password is None:
                raise ConfigError(f"--users {args.users} has no password for {aor.aor}, this phone's user")
        _named_or_ad_hoc(aor.aor, args.state_dir)
        _driver, front, address = await start_peer(args, supervisor, board, users=users)
        if front is None:
            raise ConfigError("a phone with its own peer needs its SIP front: drop --sip-listen off or give --proxy")
        sip_host = parse_hostport(args.sip_listen)[0]
        # A front on every address: the handset talks to it on loopback (its route outward is
        # the front's, RFC 5658), and only its media is on the device's address, which may
        # change. A front on one address: the handset sits beside it there.
        port = front.tls_port if args.sip_transport == "tls" else front.port
        if not port:
            raise ConfigError("--sip-transport tls needs the front's TLS port: drop --sip-tls off")
        proxy = ("127.0.0.1" if sip_host in WILDCARDS else sip_host, port)
    failed: list[str] = []

    async def main() -> None:
        # Inside the supervisor's run: our own front serves the REGISTER with tasks it spawns.
        desk = Deskphone(board, print_line) if board is not None and not board.answers_itself else None
        sound = SoundDevices(board.earpiece, board.microphone) if board is not None else None
        try:
            bind_host = _local_address(proxy)
            media_bind_host = None
            media_address = None
            if front is not None and bind_host != front.front.config.advertise_host:
                # Far phones send audio to the address we advertise: the device's, or the one a
                # NAT that forwards our ports has.
                media_address = front.front.config.advertise_host
                media_bind_host = "0.0.0.0" if bind_host.startswith("127.") else bind_host
            handset = Handset(aor.aor, proxy, transport=args.sip_transport, record_dir=record_dir,
                              bind_host=bind_host, backups=backups, listener=desk, sound=sound,
                              media_address=media_address, media_bind_host=media_bind_host,
                              rtp_port=args.rtp_port or 0, idle_poll_s=IDLE_POLL_S if front is not None else POLL_S,
                              password=password, srtp=args.srtp)
            if front is not None:
                front.on_sent = handset.nudge  # whatever comes to the handset comes through its front
            await handset.start()
            if address is not None and media_address is not None:
                address.on_moved.append(handset.moved)
        except HandsetError as e:
            failed.append(str(e))
            return
        supervisor.on_shutdown("stop the handset", handset.stop)
        for uri in args.watch:
            handset.watch(sip_uri(uri, "--watch").aor)
        if desk is None:
            await _commands(handset, supervisor)
            return
        desk.ua = handset
        tones = tempfile.TemporaryDirectory(prefix="peerphone-tones-")
        supervisor.on_shutdown("remove the tone files", tones.cleanup)
        desk.make_tones(Path(tones.name))
        if board is not None and not board.terminal:
            desk.attach(Panel(board, desk.hook, desk.key, factory=pins))
            await asyncio.Event().wait()
        await terminal(desk, await _stdin(), supervisor.stop)
        await asyncio.Event().wait()

    await supervisor.run(main)
    for reason in failed:
        print(f"peerphone: {reason}", file=sys.stderr)
    return 1 if failed else 0


COMMANDS_HELP = ("commands: call URI [tone=HZ] [play=F.wav] [record=F.wav] [seconds=N] | message URI TEXT | "
                 "watch URI | quit")


def print_line(line: str) -> None:
    print(line, flush=True)


async def _stdin() -> asyncio.StreamReader:
    """Standard input as lines (at its end at once when it is not a pipe, socket or terminal)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=4096)
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        readable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()
    except (OSError, ValueError):
        readable = False
    if readable:  # uvloop aborts the process on a pipe of another kind, /dev/null for one
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    else:
        reader.feed_eof()
    return reader


async def _commands(handset: Handset, supervisor: Supervisor) -> None:
    """Read commands from stdin, one a line, until it ends; then keep running (a deskphone has no stdin)."""
    reader = await _stdin()
    while line := await reader.readline():
        try:
            words = shlex.split(line.decode(errors="replace"))
        except ValueError as e:
            handset.say(f"error: {e}")
            continue
        if not words:
            continue
        if words[0] == "quit":
            supervisor.stop()
            return
        supervisor.spawn(_command(handset, words))
    await asyncio.Event().wait()


async def _command(handset: Handset, words: list[str]) -> None:
    try:
        if words[0] == "call" and len(words) >= 2:
            options = dict(w.split("=", 1) for w in words[2:] if "=" in w)
            await _call(handset, sip_uri(words[1], "URI"), options)
        elif words[0] == "message" and len(words) >= 3:
            uri = sip_uri(words[1], "URI")
            status = await handset.message(str(uri), " ".join(words[2:]))
            handset.say(f"message to {uri.aor}: {_message_outcome(status)}")
        elif words[0] == "watch" and len(words) == 2:
            handset.watch(sip_uri(words[1], "URI").aor)
        else:
            handset.say(f"error: {COMMANDS_HELP}")
    except (ConfigError, HandsetError, ValueError) as e:
        handset.say(f"error: {e}")
    except Exception as e:  # a command that fails must not take the phone down with it
        log.exception("command %r failed", words[0])
        handset.say(f"error: {words[0]} failed: {e}")


async def _call(handset: Handset, callee: Uri, options: dict[str, str]) -> None:
    tone = float(options["tone"]) if "tone" in options else None
    seconds = float(options.get("seconds", "5"))
    _check_call(options.get("play"), tone, seconds)
    report = await _place_call(handset, callee, options.get("play"), tone, options.get("record"), seconds)
    handset.say(_setup_line(report, str(callee)))


async def _place_call(handset: Handset, callee: Uri, play: str | None, tone: float | None, record: str | None,
                      seconds: float) -> CallReport:
    """One call (checked by _check_call), playing a WAV or a generated tone, recording if asked."""
    with tempfile.TemporaryDirectory(prefix="peerphone-call-") as tmp:
        sound = Path(play) if play else None
        if tone:
            sound = Path(tmp) / "tone.wav"
            write_tone(sound, tone, seconds + 1)
        return await handset.call(str(callee), play=sound, record=Path(record) if record else None,
                                  seconds=seconds)


def _check_call(play: str | None, tone: float | None, seconds: float) -> None:
    """Refuse, before anything starts, a call that could only fail or be silent."""
    if play and tone:
        raise ConfigError("give --play or --tone, not both")
    if play:
        _check_wav(Path(play))
    if not 0 < seconds <= 3600:
        raise ConfigError("--seconds must be 0..3600")


@asynccontextmanager
async def _one_shot(args: argparse.Namespace, peer: Uri) -> AsyncIterator[Handset]:
    """A handset that does not register, for one call or one message through --proxy."""
    proxy = parse_hostport(args.proxy, 5060)
    handset = Handset(_me(args, peer), proxy, register=False, transport=args.sip_transport, srtp=args.srtp,
                      bind_host=_local_address(proxy))
    await handset.start()
    try:
        yield handset
    finally:
        await handset.stop()


async def call(args: argparse.Namespace) -> int:
    callee = sip_uri(args.uri, "URI")
    _check_call(args.play, args.tone, args.seconds)
    try:
        async with _one_shot(args, callee) as handset:
            report = await _place_call(handset, callee, args.play, args.tone, args.record, args.seconds)
    except HandsetError as e:
        print(f"peerphone: {e}", file=sys.stderr)
        return 1
    return _reported(report, args.uri)


def _reported(report: CallReport, uri: str) -> int:
    line = _setup_line(report, uri)
    print(line, file=sys.stdout if report.status // 100 == 2 else sys.stderr)
    return 0 if report.status // 100 == 2 else 1


def _setup_line(report: CallReport, uri: str) -> str:
    if report.status // 100 != 2:
        return f"call to {uri} failed: {report.status} {report.reason}"
    ringing = "-" if report.ringing_ms is None else f"{report.ringing_ms:.1f} ms"
    return f"setup: INVITE to 180 Ringing {ringing}, to confirmed {report.confirmed_ms:.1f} ms"


def _message_outcome(status: int) -> str:
    if status == 202:
        return "kept until it registers (202)"
    return f"delivered ({status})" if status // 100 == 2 else f"failed ({status})"


async def message(args: argparse.Namespace) -> int:
    recipient = sip_uri(args.uri, "URI")
    try:
        async with _one_shot(args, recipient) as handset:
            status = await handset.message(str(recipient), args.text)
    except HandsetError as e:
        print(f"peerphone: {e}", file=sys.stderr)
        return 1
    print(f"message to {recipient.aor}: {_message_outcome(status)}")
    return 0 if status // 100 == 2 else 1
