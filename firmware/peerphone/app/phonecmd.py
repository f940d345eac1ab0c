"""`peerphone phone`, `call` and `message`: the handset, with or without a peer of its own."""

from __future__ import annotations

import argparse
import getpass
import sys
import tempfile
from pathlib import Path

from ..net.supervisor import Supervisor
from ..sip.message import SipParseError
from ..sip.ua import CallReport, Handset, HandsetError
from ..sip.uri import Uri
from .cli import start_peer
from .config import ConfigError, parse_hostport
from .tone import write_tone


def _uri(text: str, what: str) -> Uri:
    try:
        uri = Uri.parse(text)
    except SipParseError:
        raise ConfigError(f"{what} {text!r} is not a sip: URI like sip:bob@peerphone.local") from None
    if uri.user is None:
        raise ConfigError(f"{what} {text!r} has no user part (sip:USER@DOMAIN)")
    return uri


def _me(args: argparse.Namespace, callee: Uri) -> str:
    if args.aor:
        return _uri(args.aor, "--aor").aor
    return f"sip:{getpass.getuser()}@{callee.host}"


async def phone(args: argparse.Namespace) -> int:
    aor = _uri(args.aor, "--aor")
    record_dir = Path(args.record_dir) if args.record_dir else None
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor()
    if args.proxy:
        proxy = parse_hostport(args.proxy, 5060)
    else:
        args.domain = args.domain or aor.host
        _driver, front = await start_peer(args, supervisor)
        if front is None:
            raise ConfigError("a phone with its own peer needs its SIP front: drop --sip-listen off or give --proxy")
        proxy = ("127.0.0.1", front.port)
    try:
        handset = Handset(aor.aor, proxy, transport=args.sip_transport, record_dir=record_dir)
        await handset.start()
    except HandsetError as e:
        print(f"peerphone: {e}", file=sys.stderr)
        return 1
    supervisor.on_shutdown("stop the handset", handset.stop)
    for uri in args.watch:
        handset.watch(_uri(uri, "--watch").aor)
    await supervisor.run()
    return 0


async def call(args: argparse.Namespace) -> int:
    callee = _uri(args.uri, "URI")
    if args.play and args.tone:
        raise ConfigError("give --play or --tone, not both")
    if args.play and not Path(args.play).is_file():
        raise ConfigError(f"--play {args.play}: no such file")
    if not 0 < args.seconds <= 3600:
        raise ConfigError("--seconds must be 0..3600")
    proxy = parse_hostport(args.proxy, 5060)
    with tempfile.TemporaryDirectory(prefix="peerphone-call-") as tmp:
        play = Path(args.play) if args.play else None
        if args.tone:
            play = Path(tmp) / "tone.wav"
            write_tone(play, args.tone, args.seconds + 1)
        try:
            handset = Handset(_me(args, callee), proxy, register=False, transport=args.sip_transport)
            await handset.start()
        except HandsetError as e:
            print(f"peerphone: {e}", file=sys.stderr)
            return 1
        try:
            report = await handset.call(str(callee), play=play, record=Path(args.record) if args.record else None,
                                        seconds=args.seconds)
        except HandsetError as e:
            print(f"peerphone: {e}", file=sys.stderr)
            return 1
        finally:
            await handset.stop()
    return _reported(report, args.uri)


def _reported(report: CallReport, uri: str) -> int:
    if report.status // 100 != 2:
        print(f"peerphone: call to {uri} failed: {report.status} {report.reason}", file=sys.stderr)
        return 1
    if report.ringing_ms is not None:
        print(f"setup: INVITE to 180 Ringing {report.ringing_ms:.1f} ms, to confirmed {report.confirmed_ms:.1f} ms")
    return 0


async def message(args: argparse.Namespace) -> int:
    recipient = _uri(args.uri, "URI")
    proxy = parse_hostport(args.proxy, 5060)
    try:
        handset = Handset(_me(args, recipient), proxy, register=False, transport=args.sip_transport)
        await handset.start()
    except HandsetError as e:
        print(f"peerphone: {e}", file=sys.stderr)
        return 1
    try:
        status = await handset.message(str(recipient), args.text)
    except HandsetError as e:
        print(f"peerphone: {e}", file=sys.stderr)
        return 1
    finally:
        await handset.stop()
    if status == 202:
        print(f"kept for {recipient.aor} until it registers (202)")
    elif status // 100 == 2:
        print(f"delivered to {recipient.aor} ({status})")
    else:
        print(f"peerphone: message to {recipient.aor} failed: {status}", file=sys.stderr)
        return 1
    return 0
