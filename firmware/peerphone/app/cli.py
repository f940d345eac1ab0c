"""The `peerphone` command."""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from .. import __version__, _accel
from ..core.limits import Timing
from ..core.overlay import Topology
from ..hw.board import BoardError
from ..net.loop import loop_name, run
from ..net.supervisor import Supervisor
from ..net.udp import OverlayError
from ..sip.front import gateway_name
from ..sip.ua import RTP_PORTS
from . import overlaycmd
from .config import DEFAULT_OVERLAY, DEFAULT_PORT, DEFAULT_SIP_PORT, ConfigError, parse_hostport
from .identity import REVOKED_FILE, ca_init, ca_issue, ca_load, ca_revoke, default_state_dir
from .logs import OncePerInterval
from .wiring import start_peer

log = logging.getLogger("peerphone")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_ms(text: str) -> int:
    value = int(text)
    if not 20 <= value <= 60_000:
        raise argparse.ArgumentTypeError("must be 20..60000 ms")
    return value


def _dwell_s(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError("must be 1..86400 s")
    return value


def _rtp_port(text: str) -> int:
    value = int(text)
    if not 1024 <= value <= 65536 - RTP_PORTS:
        raise argparse.ArgumentTypeError(f"must be 1024..{65536 - RTP_PORTS}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peerphone",
        description="Serverless SIP phones: peers form an overlay (Chord, Kademlia or one-hop) that stores and "
                    "finds values with no server; on it, phones call, message and watch each other by AOR, and "
                    "every peer is a SIP registrar and proxy for any SIP phone.",
    )
    parser.add_argument("--version", action="version",
                        version=f"peerphone {__version__} (event loop: {loop_name()}, native: {_accel.summary()})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    overlay_help = f"overlay name; peers of different overlays ignore each other (default {DEFAULT_OVERLAY})"

    peer = sub.add_parser("peer", help="run a peer of the overlay until SIGINT/SIGTERM",
                          description="Run a peer: route, store and replicate values; leave gracefully on "
                                      "SIGINT/SIGTERM, handing stored values to the successor.")
    _peer_arguments(peer, overlay_help)

    phone = sub.add_parser("phone", help="run a phone: a peer of the overlay and a handset for one AOR",
                           description="Run a peer (or use the SIP front at --proxy) and a pjsua2 handset "
                                       "registered as --aor. Incoming calls are answered; with --record-dir each is "
                                       "recorded; messages and presence changes are printed. Runs until "
                                       "SIGINT/SIGTERM.")
    phone.add_argument("--aor", required=True, metavar="sip:USER@DOMAIN", help="the address of record to answer")
    phone.add_argument("--proxy", metavar="HOST:PORT", action="append",
                       help="register at this SIP front instead of running a peer; give it again to register "
                            "at more fronts too, so calls reach the phone while one of them lives")
    phone.add_argument("--password-file", type=Path, metavar="FILE",
                       help="the user's password (its first line), for fronts that ask (--proxy); a phone with "
                            "its own peer makes one up for its front and handset, or takes its line of --users")
    phone.add_argument("--record-dir", metavar="DIR", help="record every answered call to DIR/call-N.wav")
    phone.add_argument("--watch", action="append", default=[], metavar="URI", help="show URI's presence")
    phone.add_argument("--sip-transport", choices=["udp", "tcp", "tls"], default="udp",
                       help="to the front: its own on this machine, or --proxy (for tls, the front's TLS port); "
                            "default %(default)s")
    _srtp_argument(phone)
    phone.add_argument("--rtp-port", type=_rtp_port, metavar="PORT",
                       help=f"call audio on UDP ports PORT..PORT+{RTP_PORTS - 1} (default: any free ports); behind "
                            "a NAT, forward them with the overlay and SIP ports and give --advertise")
    phone.add_argument("--board", type=Path, metavar="FILE.toml",
                       help="a phone with a hook: the board file's pins (or, for board/desktop.toml, this "
                            "terminal: Enter lifts and hangs up, digits dial) and its dial plan; calls ring "
                            "until answered")
    _peer_arguments(phone, overlay_help)

    call = sub.add_parser("call", help="call an AOR, play and record audio, hang up",
                          description="Place one call through a SIP front (a peer's, 127.0.0.1:5060 by default): "
                                      "print when it rings and when it is set up, play and record while "
                                      "connected, hang up after --seconds. Exit 0 when answered.")
    call.add_argument("uri", metavar="sip:USER@DOMAIN")
    _ua_arguments(call)
    call.add_argument("--play", metavar="F.wav", help="play this WAV into the call")
    call.add_argument("--tone", type=float, metavar="HZ", help="play a sine tone of HZ instead of a file")
    call.add_argument("--record", metavar="F.wav", help="record what the far end sends")
    call.add_argument("--seconds", type=float, default=5.0, help="connected time before hanging up (default 5)")

    message = sub.add_parser("message", help="send a text message to an AOR",
                             description="Send TEXT as a SIP MESSAGE. Delivered at once when the recipient is "
                                         "online, else kept in the overlay until it registers.")
    message.add_argument("uri", metavar="sip:USER@DOMAIN")
    message.add_argument("text")
    _ua_arguments(message)

    put = sub.add_parser("put", help="store a value under a key", description="Store VALUE under KEY "
                         "through the peer at --via; it is kept on 3 peers until its lifetime ends.")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--via", required=True, metavar="HOST:PORT", help="the peer to send the request to")
    put.add_argument("--lifetime", type=int, default=3600, metavar="SECONDS", help="default %(default)s")
    shape = put.add_mutually_exclusive_group()
    shape.add_argument("--append", action="store_true", help="append VALUE to the list under KEY")
    shape.add_argument("--dict-key", metavar="SUBKEY", help="store VALUE under SUBKEY in the map under KEY")
    put.add_argument("--overlay", default=DEFAULT_OVERLAY, help=overlay_help)
    put.add_argument("--state-dir", type=Path, metavar="DIR", help=STATE_DIR_HELP)

    get = sub.add_parser("get", help="fetch the value stored under a key",
                         description="Fetch the value under KEY through the peer at --via; exit 1 if none.")
    get.add_argument("key")
    get.add_argument("--via", required=True, metavar="HOST:PORT", help="the peer to send the request to")
    shape = get.add_mutually_exclusive_group()
    shape.add_argument("--list", action="store_true", help="the list under KEY (see put --append)")
    shape.add_argument("--map", action="store_true", help="the map under KEY (see put --dict-key)")
    get.add_argument("--overlay", default=DEFAULT_OVERLAY, help=overlay_help)
    get.add_argument("--state-dir", type=Path, metavar="DIR", help=STATE_DIR_HELP)

    stat = sub.add_parser("stat", help="show a peer's ring state and counters")
    stat.add_argument("--via", required=True, metavar="HOST:PORT", help="the peer to ask")
    stat.add_argument("--overlay", default=DEFAULT_OVERLAY, help=overlay_help)
    stat.add_argument("--state-dir", type=Path, metavar="DIR", help=STATE_DIR_HELP)

    lab = sub.add_parser("lab", help="run N peer processes on 127.0.0.1 and measure the overlay",
                         description="Start N peer processes on 127.0.0.1, wait for a stable ring, store M "
                                     "values and fetch each through another peer; optionally SIGKILL a "
                                     "fraction of the peers and fetch everything again after repair. Prints "
                                     "success rate, hops, latency and memory; stops every process it started.")
    lab.add_argument("--peers", type=int, default=16, metavar="N", help="2..128 (default %(default)s)")
    lab.add_argument("--ops", type=int, default=200, metavar="M", help="values stored (default %(default)s)")
    lab.add_argument("--kill", type=float, default=0.0, metavar="FRACTION",
                     help="fraction of peers to SIGKILL after the stores, 0..0.6 (default 0)")
    lab.add_argument("--seed", type=int, default=1, help="choice of keys, peers and victims (default 1)")
    _topology_argument(lab, "the peers' overlay topology (default chord)")
    lab.add_argument("--maintenance-ms", type=_positive_ms, default=250,
                     help="the peers' maintenance period (default %(default)s)")
    sim = sub.add_parser("sim", help="run the real core at scale in the deterministic simulator",
                         description="Simulate N nodes running the real PeerNode on a virtual clock: lookups "
                                     "on a stable ring, a mass failure (--fail-fraction) or churn "
                                     "(--churn-median-s). One seed gives one byte-identical report.")
    sim.add_argument("--nodes", required=True, metavar="N[,N...]",
                     help="overlay size, 3..100000; several sizes give one report each and a plot")
    _topology_argument(sim, "overlay topology (default chord; onehop is for overlays of up to about 500 nodes)")
    sim.add_argument("--seed", type=int, required=True, help="decides everything: ids, latencies, churn, workload")
    sim.add_argument("--duration-s", type=int, default=300, help="measured period (default %(default)s)")
    sim.add_argument("--churn-median-s", type=float, help="median session time; nodes fail and are replaced")
    sim.add_argument("--session", choices=["exponential", "weibull"], default="exponential",
                     help="session-time distribution under churn (default %(default)s)")
    sim.add_argument("--fail-fraction", type=float, default=0.0, metavar="P",
                     help="fail this fraction of nodes at once, then measure repair and data loss")
    sim.add_argument("--values", type=int, default=1000, help="values stored first (default %(default)s)")
    sim.add_argument("--lookups", type=int, default=2000, help="lookups measured (default %(default)s)")
    sim.add_argument("--maintenance-s", type=float, default=30.0,
                     help="maintenance period of every node (default %(default)s)")
    sim.add_argument("--successors", type=int, default=8, help="successor list length, 2..16 (default 8)")
    sim.add_argument("--loss", type=float, default=0.0, help="datagram loss probability (default 0)")
    sim.add_argument("--partition-s", metavar="START,DURATION",
                     help="cut the network in two halves during the measured period, then check the ring heals")
    sim.add_argument("--cold-start", action="store_true",
                     help="build the ring join by join instead of from its converged state")
    sim.add_argument("--calls", type=int, default=0, metavar="N",
                     help="measure N calls between phones through the nodes' SIP fronts instead of lookups")
    sim.add_argument("--phones", type=int, default=1000,
                     help="phones that register at random peers, with --calls (default %(default)s)")
    sim.add_argument("--battery-share", type=float, default=0.0, metavar="F",
                     help="this share of the nodes are battery handsets whose role follows a battery model and "
                          "the role policy (a client below 25%%): lookups from peers and from clients (with "
                          "--calls: calls between phones at fronts on peers and on handsets), the datagrams of an "
                          "idle client and of a peer, and every value fetched after the changes")
    sim.add_argument("--plot", metavar="FILE.svg", help="write hops and latency against N")
    demo = sub.add_parser("demo", help="a real call on this machine: peers, two phones, a tone",
                          description="Start N peer processes on 127.0.0.1 and two pjsua2 phones registered at "
                                      "different peers; Alice calls Bob by AOR and plays a 1 kHz tone; print the "
                                      "call setup time and the frequency found in Bob's recording. Stops every "
                                      "process it started; exit 0 when the tone went through.")
    demo.add_argument("--peers", type=int, default=6, metavar="N", help="2..64 (default %(default)s)")
    demo.add_argument("--seconds", type=float, default=3.0, help="length of the call (default %(default)s)")
    _topology_argument(demo, "the peers' overlay topology (default chord)")
    demo.add_argument("--seed", type=int, default=1, help="choice of bootstrap peers (default 1)")
    device = sub.add_parser("device", help="run the phone a device file describes (a flashed image's service)",
                            description="Run `phone` as FILE says: aor, overlay, bootstrap peers, board, and "
                                        "for a phone behind a NAT advertise, port, sip_port and rtp_port. The "
                                        "image's service runs it on peerphone.toml of the SD card's FAT partition. "
                                        "A mistake in FILE is one line and exit status 2.")
    device.add_argument("file", type=Path, metavar="FILE.toml")
    board = sub.add_parser("board", help="check board files and say what each one names",
                           description="Read each board file (board/*.toml: a phone model's pins, sound devices, "
                                       "tones and dial plan) and print what it names, or every mistake in it, one "
                                       "line each naming the file and the key; exit 2 when any file has one.")
    board.add_argument("files", nargs="+", type=Path, metavar="FILE.toml")
    ca = sub.add_parser("ca", help="an enrollment authority for an overlay that admits only the nodes it enrolls",
                        description="Run offline (an organiser's laptop, or one kit). `init DIR` makes the "
                                    "authority's key (DIR/authority.key, 0600; keep it away from the overlay). "
                                    "`issue DIR --state-dir NODE` makes a node's key and certificate with a node id "
                                    "the authority picks, and the user names it may act for, into NODE (copy it to "
                                    "the node's state directory; it runs with --state-dir NODE). "
                                    "`revoke DIR CERT --via PEER` withdraws a node's certificate and stores the "
                                    "revocation in the overlay.")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    ca_init_parser = ca_sub.add_parser("init", help="make the authority's key")
    ca_init_parser.add_argument("dir", type=Path, metavar="DIR")
    ca_issue_parser = ca_sub.add_parser("issue", help="enroll a node: its key and certificate")
    ca_issue_parser.add_argument("dir", type=Path, metavar="DIR")
    ca_issue_parser.add_argument("--state-dir", type=Path, required=True, metavar="NODE",
                                 help="where to write the node's node.key (0600), node.crt, authority.pub and "
                                      "names")
    ca_issue_parser.add_argument("--name", action="append", default=[], metavar="sip:USER@DOMAIN",
                                 help="a user name the node may register (repeatable): in the certificate, and "
                                      "the authority's ticket for it in NODE/names; in an enrolled overlay no other "
                                      "node registers it")
    ca_issue_parser.add_argument("--gateway", action="append", default=[], metavar="DOMAIN",
                                 help="a foreign domain the node may be the overlay's gateway to (repeatable; "
                                      "peerphone peer --gateway): in an enrolled overlay no other node is")
    ca_revoke_parser = ca_sub.add_parser(
        "revoke", help="withdraw nodes' certificates, and store the revocations in the overlay",
        description="Add each CERT (a serial as `ca issue` printed it, or a node.crt file) to DIR/revoked, then, with "
                    "--via, store every revocation in DIR/revoked through that peer, sealed with the authority's key. "
                    "Every peer fetches them each minute (those that store them know at once); from then on the "
                    "revoked node's proofs, answers and signed values count nowhere and it cannot rejoin. Stored "
                    "revocations live 7 days: run `ca revoke DIR --via HOST:PORT` again at least weekly.")
    ca_revoke_parser.add_argument("dir", type=Path, metavar="DIR")
    ca_revoke_parser.add_argument("certs", nargs="*", metavar="CERT", help="a serial in hex, or a certificate file")
    ca_revoke_parser.add_argument("--via", metavar="HOST:PORT",
                                  help="a peer of the overlay to store the revocations through (default: only "
                                       "record them in DIR)")
    ca_revoke_parser.add_argument("--overlay", default=DEFAULT_OVERLAY, help="the overlay's name (default %(default)s)")
    sub.add_parser("doctor", help="say what this installation runs on",
                   description="Print the version, the Python, the event loop, and whether the native (cffi) "
                               "routines or their pure-Python twins are active, and why.")
    return parser


def _topology_argument(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--topology", default="chord", choices=[t.value for t in Topology], help=text)


STATE_DIR_HELP = ("the identity to use (its key and certificate, as `peerphone ca issue` wrote them): an enrolled "
                  "overlay admits nobody else (default: a new ad-hoc identity)")


def _peer_arguments(peer: argparse.ArgumentParser, overlay_help: str) -> None:
    peer.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", metavar="HOST:PORT",
                      help=f"UDP address to listen on; port 0 picks a free one (default 0.0.0.0:{DEFAULT_PORT})")
    peer.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT",
                      help="a peer already in the overlay (repeatable); none starts a new overlay")
    peer.add_argument("--advertise", metavar="HOST", help="address other peers reach us at "
                      "(default: the listen address, or the route toward the first bootstrap peer)")
    peer.add_argument("--overlay", default=DEFAULT_OVERLAY, help=overlay_help)
    peer.add_argument("--role", choices=("auto", "peer", "client"), default="auto",
                      help="auto (default): a peer while its battery, its link to its neighbours and its "
                           "reachability allow, else a client; client: attach to a bootstrap peer, store and route "
                           "nothing for others, be reached through that peer; peer: always a peer")
    peer.add_argument("--client", action="store_const", const="client", dest="role", help="the same as --role client")
    peer.add_argument("--battery", metavar="auto|NAME|DIR",
                      help="follow this battery (the kernel's power_supply: the first battery, one by name, or a "
                           "directory of its files): a client below 25%% while discharging, a peer again from 50%% or "
                           "on a charger (a board file's [battery] and [role] say otherwise)")
    peer.add_argument("--role-dwell-s", type=_dwell_s, metavar="S",
                      help="least time in a role before the policy may change it (default 60, or the board's)")
    _topology_argument(peer, "chord, kademlia, or onehop for overlays of up to a few hundred nodes; every peer "
                             "of one overlay must use the same (default chord)")
    peer.add_argument("--maintenance-ms", type=_positive_ms, default=Timing().maintenance_interval_ms,
                      help="period of stabilize, fix-fingers and failure probes (default %(default)s)")
    peer.add_argument("--state-dir", type=Path, default=default_state_dir(), metavar="DIR",
                      help="keep this node's key (0600) and certificate here, and with them its node id across "
                           "restarts, and a phone's handset password, and with it the phone's own AOR (default: "
                           "systemd's STATE_DIRECTORY; without one, a new identity each start)")
    _sip_arguments(peer)


def _sip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sip-listen", default=f"0.0.0.0:{DEFAULT_SIP_PORT}", metavar="HOST:PORT|off",
                        help="UDP and TCP address of the SIP registrar/proxy any SIP phone can use; port 0 picks "
                             f"a free one, off runs none (default 0.0.0.0:{DEFAULT_SIP_PORT})")
    parser.add_argument("--sip-tls", default="auto", metavar="PORT|off",
                        help="TCP port of SIP over TLS, for phones that can and for the other fronts, which call "
                             "each other over it (SRTP keys travel in the SDP); default: the --sip-listen port + 1, "
                             "so 5061 (a free one when that is 0)")
    parser.add_argument("--sip-tunnel", action="store_true",
                        help="other peers send SIP for phones registered here through the overlay (Tunnel "
                             "requests), not to the SIP address: for a peer others cannot reach directly (NAT)")
    parser.add_argument("--domain", help="SIP domain of the overlay's AORs, sip:USER@DOMAIN (default: the overlay "
                                         "name)")
    parser.add_argument("--gateway", action="append", default=[], metavar="DOMAIN=HOST:PORT",
                        help="send requests for DOMAIN to the SIP proxy at HOST:PORT, and serve its requests for "
                             "overlay AORs (repeatable)")
    parser.add_argument("--users", type=Path, metavar="FILE",
                        help="register only these users, each proving its password (digest, SHA-256 or MD5): one "
                             "`USER PASSWORD` per line, chmod 600 (default: register anyone, as an ad-hoc overlay "
                             "with no configuration does)")


def _ua_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--proxy", default=f"127.0.0.1:{DEFAULT_SIP_PORT}", metavar="HOST:PORT",
                        help="the SIP front to send through (default %(default)s: this machine's peer)")
    parser.add_argument("--aor", metavar="sip:USER@DOMAIN", help="who we are (default: $USER at the callee's "
                                                                 "domain)")
    parser.add_argument("--sip-transport", choices=["udp", "tcp", "tls"], default="udp",
                        help="to the front; tls: to its TLS port, which --proxy then names (default %(default)s)")
    _srtp_argument(parser)


def _srtp_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--srtp", choices=["optional", "mandatory", "off"], default="optional",
                        help="encrypt call audio (SRTP, keys in the SDP): when the far end can (default), always "
                             "(refuse a far end that cannot), or never")


def _ca(args: argparse.Namespace) -> int:
    if args.ca_command == "init":
        authority = ca_init(args.dir)
        print(f"authority {authority.public_key.hex()} in {args.dir} (keep {args.dir}/authority.key offline)")
        return 0
    if args.ca_command == "revoke":
        return _ca_revoke(args)
    identity = ca_issue(args.dir, args.state_dir, (*args.name, *(gateway_name(d) for d in args.gateway)))
    names = f" for {', '.join(identity.credential.names)}" if identity.credential.names else ""
    print(f"issued node id {identity.node_id:040x} (serial {identity.credential.serial:x}){names} into "
          f"{args.state_dir}")
    return 0


def _ca_revoke(args: argparse.Namespace) -> int:
    if not args.certs and not args.via:
        raise ConfigError("name a certificate to revoke, or --via to store the revocations again")
    added, revocations = ca_revoke(args.dir, args.certs)
    for revocation in added:
        print(f"revoked serial {revocation.serial:x} (node id {revocation.node_id:040x})")
    if args.via is None:
        print(f"{len(revocations)} revocations recorded in {args.dir / REVOKED_FILE}; store them with --via HOST:PORT",
              file=sys.stderr)
        return 0
    run(overlaycmd.publish_revocations(ca_load(args.dir), args.dir, parse_hostport(args.via, DEFAULT_PORT),
                                       args.overlay, revocations))
    print(f"{len(revocations)} revocations stored through {args.via}: every peer refuses those nodes within a minute")
    return 0


def doctor() -> int:
    print(f"peerphone {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()} ({platform.system()})")
    print(f"event loop: {loop_name()}")
    if _accel.ACTIVE == "native":
        print("native routines: native (cffi module compiled at install)")
    else:
        print(f"native routines: pure Python ({_accel.WHY_PURE}); install with a C compiler to build them")
    return 0


def check_boards(files: Sequence[Path]) -> int:
    from ..hw.board import load

    status = 0
    for path in files:
        try:
            b = load(path)
        except BoardError as e:
            print("\n".join(e.lines), file=sys.stderr)
            status = 2
            continue
        keypad = "none" if b.keypad is None else \
            f"{len(b.keypad.rows)}x{len(b.keypad.cols)} matrix" if b.keypad.rows else f"{len(b.keypad.buttons)} buttons"
        print(f"{path}: {b.name}: GPIO {b.gpio}, hook {b.hook_pin}, keypad {keypad}, ringer {b.ringer_pin}, "
              f"lamps {dict(b.lamps) or 'none'}, earpiece {b.earpiece}, microphone {b.microphone}, "
              f"{len(b.dial_plan.codes)} dial codes")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(OncePerInterval())
    status: int
    try:
        if args.command == "lab":
            from .lab import LabSpec, run_lab
            return run_lab(LabSpec.from_args(args))
        if args.command == "sim":
            from .simcmd import run_sim
            return run_sim(args)
        if args.command == "doctor":
            return doctor()
        if args.command == "ca":
            return _ca(args)
        if args.command == "board":
            return check_boards(args.files)
        if args.command == "demo":
            from .demo import run_demo
            return run_demo(args)
        if args.command == "device":
            from .device import device
            status = run(device(args))
            return status
        if args.command in ("phone", "call", "message"):
            from . import phonecmd
            status = run(getattr(phonecmd, args.command)(args))
            return status
        result: int = run(_COMMANDS[args.command](args))
        return result
    except ConfigError as e:
        print(f"peerphone: error: {e}", file=sys.stderr)
        return 2
    except BoardError as e:
        print("\n".join(e.lines), file=sys.stderr)
        return 2
    except OverlayError as e:
        print(f"peerphone: {e}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("peerphone: no answer from the overlay", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _peer(args: argparse.Namespace) -> int:
    supervisor = Supervisor()
    await start_peer(args, supervisor)
    await supervisor.run()
    return 0


_COMMANDS = {"peer": _peer, "put": overlaycmd.put, "get": overlaycmd.get, "stat": overlaycmd.stat}
