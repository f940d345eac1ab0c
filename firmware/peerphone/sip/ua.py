"""The handset user agent on pjsua2: the only module that imports pjsua2.

pjsua2 is driven from asyncio: no worker threads (`threadCnt=0`,
`mainThreadOnly`, and RTP on the SIP endpoint's ioqueue, not a media thread of
its own), and one task polls `libHandleEvents(0)`, so every callback runs on the
event loop's thread. It polls every 5 ms while something is going on (a call, or
BUSY_S after a nudge or a request of ours) and, when idle, every `idle_poll_s` or at once when
`nudge()`d: a phone's own SIP front nudges it whenever it sends, so an idle
phone's handset wakes every few seconds and still answers a call at once. The sound
device (or the null device that clocks the conference bridge) closes after a
second with no call and opens again for the next. One Endpoint per process (a
second aborts it). pjsua2 objects (account, calls, buddies, players, recorders)
are held in explicit attributes and released before `libDestroy`, which aborts
the process if any is still alive; a recorder's WAV is complete only once the
recorder object is gone, so it is dropped when its call ends.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .content import Content, Receipt, Text, describe, understand
from .message import SipParseError, parse
from .uri import Uri

log = logging.getLogger("peerphone.ua")

POLL_S = 0.005
BUSY_S = 0.5  # fast polling this long after a nudge (a call keeps it fast for its whole length)
IDLE_POLL_S = 5.0  # pjsua2's own timers (REGISTER refresh, keep-alives, closing the sound device) may run this late
REGISTER_TIMEOUT_S = 10.0
SESSION_EXPIRES_S = 90  # RFC 4028 section 4: the smallest Min-SE
RTP_PORTS = 20  # a fixed RTP range (rtp_port): what a NAT in front of the phone forwards
SRTP_MODES = {"optional": "PJMEDIA_SRTP_OPTIONAL", "mandatory": "PJMEDIA_SRTP_MANDATORY",
              "off": "PJMEDIA_SRTP_DISABLED"}  # --srtp: pjmedia's names
CODECS = ("PCMU/8000", "G722/16000")  # a pure tone stays pure through these (speex does not, REAL-PARTS.md)


class HandsetError(Exception):
    """The handset could not start, register, call or send."""


def available() -> str | None:
    """None when pjsua2 can be used here, else why not."""
    try:
        import pjsua2  # noqa: F401
    except ImportError as e:
        return f"pjsua2 is not installed ({e}); pip install pjsua2-python (x86_64 wheels only)"
    return None


@dataclass(frozen=True)
class SoundDevices:
    """The ALSA PCMs a handset plays and records on (names as `aplay -L` lists them)."""

    earpiece: str
    microphone: str


class CallListener(Protocol):
    """Who hears of calls when the handset does not answer by itself (a phone with a hook):
    each call by the id `place` returned or `incoming` gave."""

    def incoming(self, call: str, caller: str) -> None: ...
    def progress(self, call: str) -> None: ...
    def answered(self, call: str) -> None: ...
    def failed(self, call: str, status: int) -> None: ...
    def ended(self, call: str) -> None: ...
    def message(self, sender: str, text: str) -> None: ...


@dataclass
class CallReport:
    status: int            # the final status of the INVITE (200 when answered)
    ringing_ms: float | None  # INVITE sent to 180 Ringing received
    confirmed_ms: float | None  # INVITE sent to the call confirmed (ACK sent)
    reason: str


class Handset:
    """A SIP phone for one AOR. Lines about what happens go to `say` (stdout by default)."""

    def __init__(self, aor: str, proxy: tuple[str, int], *, register: bool = True, bind_host: str = "127.0.0.1",
                 transport: str = "udp", record_dir: Path | None = None, backups: Sequence[tuple[str, int]] = (),
                 say: Callable[[str], None] = lambda line: print(line, flush=True),
                 listener: CallListener | None = None, sound: SoundDevices | None = None,
                 media_address: str | None = None, media_bind_host: str | None = None, rtp_port: int = 0,
                 idle_poll_s: float = POLL_S, password: str | None = None, srtp: str = "optional") -> None:
        """`backups`: more fronts to register at, each its own flow (RFC 5626 in spirit): calls
        reach the phone through whichever lives. Calls it makes go through `proxy`. With a
        `listener`, an incoming call rings (180) until `answer`, and calls are driven by
        `place`, `answer`, `reject`, `hangup`, `hold`, `resume` and `dtmf`. With `sound`, a
        call's audio and the tones of `play_tone` go through those ALSA devices (a pjsua2
        built with ALSA: `tools/pjproject`); without, through pjsua2's null device.
        `media_address`: the address far phones send audio to when it is not `bind_host` (a
        NAT that forwards the RTP ports `rtp_port`..+RTP_PORTS to us, or the device's address
        while the handset talks to its front on loopback); `media_bind_host`: where RTP is bound
        (default `bind_host`); `rtp_port` 0: any.
        `idle_poll_s`: how often pjsua2 is polled when nothing goes on; a phone whose own front
        `nudge`s it takes IDLE_POLL_S, one registered elsewhere keeps polling fast.
        `password`: the user's, for the fronts' digest challenges (any realm). `srtp`: the call's
        media encrypted (SDES, RFC 4568) when the far end takes it ("optional", the default),
        always ("mandatory": a far end without SRTP is refused), or never ("off")."""
        why = available()
        if why is not None:
            raise HandsetError(why)
        import pjsua2 as pj

        self.pj = pj
        self.aor = aor
        self.proxy = proxy
        self.password = password
        if srtp not in SRTP_MODES:
            raise HandsetError(f"srtp: one of {', '.join(SRTP_MODES)}, not {srtp!r}")
        self.srtp = srtp
        self.backups = list(backups)
        self.register = register
        self.bind_host = bind_host
        self.transport = transport
        self.record_dir = record_dir
        self.say = say
        self.listener = listener
        self.sound = sound
        self.media_address = media_address
        self.media_bind_host = media_bind_host or bind_host
        self.rtp_port = rtp_port
        self.idle_poll_s = idle_poll_s
        self._sound_on = False  # the sound devices are in use (not the null device)
        self._tone: Any = None  # the player of the tone playing
        self._loop = asyncio.get_running_loop()
        self._ep: Any = None
        self._account: Any = None
        self._backup_accounts: list[Any] = []
        self._calls: dict[int, _Call] = {}
        self._buddies: dict[str, Any] = {}
        self._registered: asyncio.Future[int] = self._loop.create_future()
        self._message_status: dict[str, collections.deque[asyncio.Future[int]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._calls_answered = 0
        self._nudged = asyncio.Event()
        self._busy_until = 0.0

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        pj = self.pj
        ep = self._ep = pj.Endpoint()
        # pjlib logs to stdout until libInit sets the levels; stdout is for what the phone says.
        saved = os.dup(1)
        sink = os.open(os.devnull, os.O_WRONLY) if not log.isEnabledFor(logging.DEBUG) else os.dup(2)
        os.dup2(sink, 1)
        try:
            ep.libCreate()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(sink)
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = "peerphone"
        # pjsua2 logs to stdout, where the phone says what happens: only with --log-level debug.
        cfg.logConfig.level = cfg.logConfig.consoleLevel = 5 if log.isEnabledFor(logging.DEBUG) else 0
        cfg.medConfig.noVad = True
        cfg.medConfig.hasIoqueue = False  # RTP on the SIP endpoint's ioqueue: no media thread
        cfg.medConfig.threadCnt = 0      # waking 100 times a second, the poll below drives it
        try:
            ep.libInit(cfg)
            tcfg = pj.TransportConfig()
            tcfg.port = 0
            tcfg.boundAddress = self.bind_host
            kind = {"tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}.get(self.transport,
                                                                                    pj.PJSIP_TRANSPORT_UDP)
            ep.transportCreate(kind, tcfg)
            ep.libStart()
            self._sound_on = self._use_sound_devices()
            self._close_sound_when_idle()
        except (pj.Error, HandsetError) as e:
            ep.libDestroy()
            self._ep = None
            raise HandsetError(e.info() if isinstance(e, pj.Error) else str(e)) from None
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        for priority, name in zip((255, 254), CODECS):
            ep.codecSetPriority(name, priority)
        self._poller = asyncio.ensure_future(self._poll())
        self._account = _Account(self, self.proxy, primary=True)
        self._account.create(self._account_config(self.proxy))
        for line, backup in enumerate(self.backups if self.register else (), start=2):
            account = _Account(self, backup, primary=False)
            account.create(self._account_config(backup, line))
            self._backup_accounts.append(account)
        if self.register:
            try:
                code = await asyncio.wait_for(asyncio.shield(self._registered), REGISTER_TIMEOUT_S)
            except asyncio.TimeoutError:
                code = 0
            if code // 100 != 2:
                await self.stop()  # a library left alive aborts the process at exit
                raise HandsetError(f"registration refused: {code}" if code else
                                   f"no answer to REGISTER from {self.proxy[0]}:{self.proxy[1]}")
            self.set_online(True)  # what watchers of our presence see (pjsua2 serves their SUBSCRIBEs)
            self.say(f"registered {self.aor} at {self.proxy[0]}:{self.proxy[1]}")

    def _use_sound_devices(self) -> bool:
        """Open the ALSA devices `sound` names; True when the call's audio goes through them.
        A pjsua2 without sound devices (the PyPI wheel) plays to its null device, with a log line:
        the phone still works, silently. A device this pjsua2 does not list is an error."""
        devices = self._ep.audDevManager()
        if self.sound is None:
            devices.setNullDev()  # no sound card: the conference bridge is clocked by the null device
            return False
        found = [(i, d) for i, d in enumerate(devices.enumDev2()) if d.driver == "ALSA"]
        if not found:
            log.warning("this pjsua2 has no ALSA devices (the PyPI wheel): the phone is silent; "
                        "tools/pjproject --install builds one with ALSA")
            devices.setNullDev()
            return False
        names = ", ".join(d.name for _, d in found if d.inputCount or d.outputCount)
        playback = next((i for i, d in found if d.name == self.sound.earpiece and d.outputCount), None)
        capture = next((i for i, d in found if d.name == self.sound.microphone and d.inputCount), None)
        if playback is None:
            raise HandsetError(f"no ALSA playback device {self.sound.earpiece!r} (there are: {names})")
        if capture is None:
            raise HandsetError(f"no ALSA capture device {self.sound.microphone!r} (there are: {names})")
        devices.setCaptureDev(capture)
        devices.setPlaybackDev(playback)
        return True

    def play_tone(self, wav: Path | None) -> None:
        """Loop `wav` (a call-progress tone) into the earpiece, in place of the tone playing;
        None: silence."""
        pj = self.pj
        if self._tone is not None:
            self._tone.stopTransmit(self._ep.audDevManager().getPlaybackDevMedia())
            self._tone = None
        if wav is None:
            return
        player = pj.AudioMediaPlayer()
        try:
            player.createPlayer(str(wav), 0)  # 0: loop
            player.startTransmit(self._ep.audDevManager().getPlaybackDevMedia())
        except pj.Error as e:
            log.warning("cannot play %s: %s", wav, e.info())
            return
        self._tone = player

    def _account_config(self, proxy: tuple[str, int], line: int = 1) -> Any:
        """One account per front; each after the first has a contact of its own (`;line=N`),
        so the overlay keeps a registration record per front."""
        acfg = self.pj.AccountConfig()
        acfg.idUri = self.aor
        if line > 1:
            acfg.sipConfig.contactUriParams = f";line={line}"
        uri = f"sip:{proxy[0]}:{proxy[1]};lr" + (f";transport={self.transport}" if self.transport != "udp" else "")
        acfg.sipConfig.proxies.append(uri)
        if self.password is not None:
            user = Uri.parse(self.aor).user or ""
            acfg.sipConfig.authCreds.append(self.pj.AuthCredInfo("digest", "*", user, 0, self.password))
        if self.register:
            acfg.regConfig.registrarUri = uri.replace(";lr", "")
            acfg.regConfig.timeoutSec = 300
        acfg.mediaConfig.transportConfig.boundAddress = self.media_bind_host
        if self.media_address:
            acfg.mediaConfig.transportConfig.publicAddress = self.media_address
        if self.rtp_port:
            acfg.mediaConfig.transportConfig.port = self.rtp_port
            acfg.mediaConfig.transportConfig.portRange = RTP_PORTS
        acfg.mediaConfig.srtpUse = getattr(self.pj, SRTP_MODES[self.srtp])
        # SDES keys travel in the SDP: over TLS (--sip-transport tls, and between fronts) nobody
        # on the way reads them; over UDP or TCP whoever reads the SIP can, but the RTP on the
        # wire is no longer the call's sound either way.
        acfg.mediaConfig.srtpSecureSignaling = 0
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.presConfig.publishEnabled = False
        # Session timers (RFC 4028) at their shortest: a call whose route died (its front
        # crashed) ends on both sides within this, instead of staying half open.
        acfg.callConfig.timerSessExpiresSec = SESSION_EXPIRES_S
        acfg.callConfig.timerMinSESec = SESSION_EXPIRES_S
        return acfg

    def _close_sound_when_idle(self) -> None:
        """Have pjsua close the device it just opened after its idle time (a second): it does so
        only after a disconnect in its bridge, so ask for one that changes nothing."""
        devices = self._ep.audDevManager()
        try:
            devices.getCaptureDevMedia().stopTransmit(devices.getPlaybackDevMedia())
        except self.pj.Error:
            pass  # nothing was connected: the idle check ran all the same

    def nudge(self) -> None:
        """Something may be on its way to pjsua2 (our front just sent): poll now, and fast."""
        self._busy_until = self._loop.time() + BUSY_S
        self._nudged.set()

    async def _poll(self) -> None:
        """The one task that drives pjsua2 (every callback runs inside libHandleEvents)."""
        while True:
            try:
                self._ep.libHandleEvents(0)
            except self.pj.Error as e:
                log.warning("pjsua2: %s", e.info())
            now = self._loop.time()
            if self._calls:  # (pjsua2's own timers count as events: they would keep it busy for ever)
                self._busy_until = now + BUSY_S
            if now < self._busy_until:
                await asyncio.sleep(POLL_S)
                continue
            self._nudged.clear()
            try:
                await asyncio.wait_for(self._nudged.wait(), self.idle_poll_s)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        """Hang up, unregister, and destroy the library with no pjsua2 object left alive."""
        if self._ep is None:
            return
        for call in list(self._calls.values()):
            call.hangup_quietly()
        if self._account is not None:
            self.set_online(False)  # watchers see us go
        registered = self._registered.done() and self._registered.result() // 100 == 2
        for account in ([self._account] if registered else []) + self._backup_accounts:
            try:
                account.setRegistration(False)
            except Exception:
                pass
        await asyncio.sleep(0.3)  # let the BYEs and the unREGISTER leave
        self._tone = None
        for call in list(self._calls.values()):
            call.release()
        self._calls.clear()
        self._buddies.clear()
        for account in self._backup_accounts:
            account.shutdown()
        self._backup_accounts.clear()
        if self._account is not None:
            self._account.shutdown()
            self._account = None
        if self._poller is not None:
            self._poller.cancel()
        self._ep.libDestroy()
        self._ep = None

    # ------------------------------------------------------------------ calls

    async def call(self, uri: str, *, play: Path | None = None, record: Path | None = None,
                   seconds: float = 5.0, answer_timeout_s: float = 30.0) -> CallReport:
        """Call `uri`, play and record while connected for `seconds`, hang up."""
        call = _Call(self, None, play=play, record=record)
        prm = self.pj.CallOpParam(True)
        call.started = time.perf_counter()
        try:
            call.makeCall(uri, prm)
        except self.pj.Error as e:
            raise HandsetError(f"cannot call {uri}: {e.info()}") from None
        self._calls[call.getId()] = call
        try:
            await asyncio.wait_for(asyncio.shield(call.settled), answer_timeout_s)
        except asyncio.TimeoutError:
            call.hangup_quietly()
            raise HandsetError(f"no answer from {uri} in {answer_timeout_s:.0f} s") from None
        report: CallReport = call.report()
        if report.status // 100 == 2:
            self.say(f"call established with {uri}")  # the setup times are the caller's to report
            try:
                await asyncio.wait_for(asyncio.shield(call.ended), seconds)
            except asyncio.TimeoutError:
                call.hangup_quietly()
                await asyncio.wait_for(asyncio.shield(call.ended), 5.0)
        return report

    def _incoming(self, call_id: int, account: Any) -> None:
        record = None
        if self.record_dir is not None:
            self._calls_answered += 1
            record = self.record_dir / f"call-{self._calls_answered}.wav"
        call = _Call(self, call_id, record=record, account=account)
        self._calls[call_id] = call
        remote = call.getInfo().remoteUri
        self.say(f"incoming call from {remote}")
        try:
            for status in (180,) if self.listener is not None else (180, 200):
                prm = self.pj.CallOpParam()
                prm.statusCode = status
                call.answer(prm)
        except self.pj.Error as e:
            self.say(f"cannot answer {remote}: {e.reason}")
            prm = self.pj.CallOpParam()
            prm.statusCode = 488
            call.hangup_quietly(prm)
            return
        if self.listener is not None:
            self.listener.incoming(str(call_id), remote)

    # -- driven call by call (with a listener)

    def place(self, uri: str) -> str:
        """Start a call to `uri`; its id. What becomes of it, the listener hears."""
        call = _Call(self, None)
        try:
            call.makeCall(uri, self.pj.CallOpParam(True))
        except self.pj.Error as e:
            raise HandsetError(f"cannot call {uri}: {e.info()}") from None
        self._calls[call.getId()] = call
        return str(call.getId())

    def moved(self, media_address: str) -> None:
        """The device's address changed: far phones send audio to `media_address` from now on.
        Each call up offers its media again there (a re-INVITE with new media, which pjsua2
        sends through the front on loopback, the path that did not move)."""
        if media_address == self.media_address:
            return
        self.media_address = media_address
        for line, account in enumerate([self._account, *self._backup_accounts], start=1):
            try:
                account.modify(self._account_config(account.proxy, line))
            except self.pj.Error as e:
                log.warning("pjsua2: account on the new address: %s", e.info())
        for call_id in list(self._calls):
            _, prm = self._op(str(call_id), flag=self.pj.PJSUA_CALL_REINIT_MEDIA)
            try:
                self._calls[call_id].reinvite(prm)
            except self.pj.Error as e:
                log.warning("pjsua2: call %d on the new address: %s", call_id, e.info())
            else:
                self.say(f"call {call_id}: media offered at {media_address}")
        self.nudge()

    def _op(self, call: str | None, status: int = 0, flag: int = 0) -> Any:
        found = self._calls.get(int(call)) if call is not None and call.isdigit() else None
        prm = self.pj.CallOpParam(True)
        prm.statusCode = status
        prm.opt.flag = flag
        return found, prm

    def answer(self, call: str) -> None:
        found, prm = self._op(call, 200)
        if found is not None:
            found.answer(prm)

    def reject(self, call: str, status: int = 486) -> None:
        found, prm = self._op(call, status)
        if found is not None:
            found.hangup_quietly(prm)

    def hangup(self, call: str | None) -> None:
        found, prm = self._op(call)
        if found is not None:
            found.hangup_quietly(prm)

    def hold(self, call: str) -> None:
        found, prm = self._op(call)
        if found is not None:
            found.setHold(prm)

    def resume(self, call: str) -> None:
        found, prm = self._op(call, flag=self.pj.PJSUA_CALL_UNHOLD)
        if found is not None:
            found.reinvite(prm)

    def dtmf(self, call: str, digit: str) -> None:
        """An RFC 4733 telephone-event in the call's audio."""
        found, _ = self._op(call)
        if found is not None:
            found.dialDtmf(digit)

    def _forget_call(self, call: "_Call") -> None:
        self._calls.pop(call.call_id, None)

    # ------------------------------------------------------------------ messages and presence

    def _buddy(self, uri: str, subscribe: bool = False) -> Any:
        buddy = self._buddies.get(uri)
        if buddy is None:
            cfg = self.pj.BuddyConfig()
            cfg.uri = uri
            cfg.subscribe = subscribe
            buddy = _Buddy(self, uri)
            buddy.create(self._account, cfg)
            self._buddies[uri] = buddy
        elif subscribe:
            buddy.subscribePresence(True)
        return buddy

    async def message(self, uri: str, text: str, timeout_s: float = 15.0) -> int:
        """Send a MESSAGE; its final status (200 delivered, 202 kept for later)."""
        done: asyncio.Future[int] = self._loop.create_future()
        waiting = self._message_status.setdefault(uri, collections.deque())
        waiting.append(done)  # pjsua2's userData is a C pointer: statuses are matched in order per recipient
        prm = self.pj.SendInstantMessageParam()
        prm.content = text
        try:
            self._buddy(uri).sendInstantMessage(prm)
            return await asyncio.wait_for(done, timeout_s)
        except self.pj.Error as e:
            raise HandsetError(f"cannot send to {uri}: {e.info()}") from None
        except asyncio.TimeoutError:
            raise HandsetError(f"no answer to MESSAGE from {uri}") from None
        finally:
            if done in waiting:
                waiting.remove(done)

    def watch(self, uri: str) -> None:
        """Subscribe to `uri`'s presence; changes are said as `presence URI: STATUS`."""
        self._buddy(uri, subscribe=True)

    def set_online(self, online: bool, note: str = "") -> None:
        status = self.pj.PresenceStatus()
        status.status = self.pj.PJSUA_BUDDY_STATUS_ONLINE if online else self.pj.PJSUA_BUDDY_STATUS_OFFLINE
        status.note = note
        self._account.setOnlineStatus(status)


def _content_of(prm: Any) -> Content:
    """What an incoming MESSAGE holds, read from the request as it came (pjsua2 hands over
    the body as text, which a deflated body is not; SWIG keeps its bytes as surrogates)."""
    raw = str(prm.rdata.wholeMsg).encode("utf-8", "surrogateescape")
    try:
        request = parse(raw)
    except SipParseError:
        return understand(prm.contentType, None, str(prm.msgBody).encode("utf-8", "surrogateescape"))
    return understand(request.get("content-type"), request.get("content-encoding"), request.body)


def _wav_complete(path: Path) -> bool:
    """The RIFF header counts every byte of the file: the writer has closed it."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 8 and head[:4] == b"RIFF" and int.from_bytes(head[4:], "little") + 8 == size > 44


def _callback(method: Callable[..., None]) -> Callable[..., None]:
    """pjsua2 calls into Python from C++: an exception escaping there aborts the process,
    so a peer's odd INVITE (say, an SDP we cannot answer) would kill the phone."""

    def guarded(self: Any, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:
            log.exception("pjsua2 callback %s failed", method.__name__)

    guarded.__name__ = method.__name__
    return guarded


def _make_classes() -> tuple[type, type, type]:
    import pjsua2 as pj

    class Account(pj.Account):  # type: ignore[misc]
        def __init__(self, handset: Handset, proxy: tuple[str, int], *, primary: bool) -> None:
            super().__init__()
            self.handset = handset
            self.proxy = proxy
            self.primary = primary
            self.registered = False

        @_callback
        def onRegState(self, prm: Any) -> None:
            fut = self.handset._registered
            if self.primary and not fut.done():
                fut.set_result(prm.code)
            elif prm.code // 100 != 2:
                log.warning("registration of %s at %s:%d: %s %s", self.handset.aor, *self.proxy, prm.code, prm.reason)
            elif not self.primary and not self.registered and prm.expiration > 0:
                self.handset.say(f"registered {self.handset.aor} at {self.proxy[0]}:{self.proxy[1]}")
            self.registered = prm.code // 100 == 2 and prm.expiration > 0

        @_callback
        def onIncomingCall(self, prm: Any) -> None:
            self.handset._incoming(prm.callId, self)

        @_callback
        def onInstantMessage(self, prm: Any) -> None:
            content = _content_of(prm)
            if isinstance(content, Receipt):  # linphone acknowledges every message: not one for a person
                self.handset.say(f"receipt from {prm.fromUri}: {describe(content)}")
                return
            self.handset.say(f"message from {prm.fromUri}: {describe(content)}")
            if self.handset.listener is not None and isinstance(content, Text):
                self.handset.listener.message(prm.fromUri, content.text)

        @_callback
        def onInstantMessageStatus(self, prm: Any) -> None:
            waiting = self.handset._message_status.get(prm.toUri.strip("<>"))
            while waiting:
                fut = waiting.popleft()
                if not fut.done():
                    fut.set_result(prm.code)
                    return

    class Call(pj.Call):  # type: ignore[misc]
        def __init__(self, handset: Handset, call_id: int | None, *, play: Path | None = None,
                     record: Path | None = None, account: Any = None) -> None:
            if call_id is None:
                super().__init__(account or handset._account)
            else:
                super().__init__(account or handset._account, call_id)
            self.handset = handset
            self.call_id = self.getId() if call_id is not None else -1
            self.play, self.record = play, record
            self.player: Any = None
            self.recorder: Any = None
            self.started = time.perf_counter()
            self.ringing_ms: float | None = None
            self.confirmed_ms: float | None = None
            self.status = 0
            self.reason = ""
            self.ended_by = ""
            self.progressed = False
            loop = handset._loop
            self.settled: asyncio.Future[None] = loop.create_future()
            self.ended: asyncio.Future[None] = loop.create_future()

        @_callback
        def onCallState(self, prm: Any) -> None:
            pj = self.handset.pj
            ci = self.getInfo()
            if self.call_id < 0:
                self.call_id = ci.id
            elapsed = (time.perf_counter() - self.started) * 1000
            if ci.lastStatusCode == 180 and self.ringing_ms is None and ci.role == pj.PJSIP_ROLE_UAC:
                self.ringing_ms = elapsed
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                if ci.role == pj.PJSIP_ROLE_UAS:  # the caller's side says so in `call`
                    self.handset.say(f"call established with {ci.remoteUri}")
                self.confirmed_ms = elapsed
                self.status = 200
                self.reason = "OK"
                if not self.settled.done():
                    self.settled.set_result(None)
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.ended_by = f"{ci.lastStatusCode} {ci.lastReason}"
                if not self.status:
                    self.status, self.reason = ci.lastStatusCode, ci.lastReason
                if not self.settled.done():
                    self.settled.set_result(None)
                self.handset._loop.call_soon(self._finish)
            self._tell(ci)

        def _tell(self, ci: Any) -> None:
            listener, pj, call = self.handset.listener, self.handset.pj, str(self.call_id)
            if listener is None:
                return
            caller = ci.role == pj.PJSIP_ROLE_UAC
            if caller and ci.lastStatusCode == 180 and not self.progressed:
                self.progressed = True
                listener.progress(call)
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                listener.answered(call)
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                if caller and self.confirmed_ms is None:
                    listener.failed(call, ci.lastStatusCode)
                else:
                    listener.ended(call)

        def _finish(self) -> None:
            recorded = self.recorder is not None
            self.release()
            if self.confirmed_ms is not None:
                self.handset.say(f"call ended ({self.ended_by})")
            self.handset._forget_call(self)
            if recorded and self.record is not None:
                asyncio.ensure_future(self._say_recorded(self.record))
            elif not self.ended.done():
                self.ended.set_result(None)

        async def _say_recorded(self, path: Path) -> None:
            # pjmedia removes a conference port on its clock thread (asynchronously since 2.14):
            # the file is closed, and its header completed, a little after the recorder is gone.
            for _ in range(150):
                if _wav_complete(path):
                    break
                await asyncio.sleep(0.02)
            self.handset.say(f"recorded {path}")
            if not self.ended.done():
                self.ended.set_result(None)

        @_callback
        def onDtmfDigit(self, prm: Any) -> None:
            """A key pressed at the far end (RFC 4733 telephone-event, or SIP INFO)."""
            self.handset.say(f"dtmf {prm.digit} from {self.getInfo().remoteUri}")

        @_callback
        def onCallMediaState(self, prm: Any) -> None:
            pj = self.handset.pj
            ci = self.getInfo()
            for i, media in enumerate(ci.media):
                if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                    continue
                audio = self.getAudioMedia(i)
                if self.play is not None:
                    if self.player is None:
                        self.player = pj.AudioMediaPlayer()
                        self.player.createPlayer(str(self.play), pj.PJMEDIA_FILE_NO_LOOP)
                    self.player.startTransmit(audio)
                if self.record is not None:
                    if self.recorder is None:
                        self.recorder = pj.AudioMediaRecorder()
                        self.recorder.createRecorder(str(self.record))
                    audio.startTransmit(self.recorder)
                if self.handset._sound_on and self.play is None:  # the person at the handset
                    devices = self.handset._ep.audDevManager()
                    audio.startTransmit(devices.getPlaybackDevMedia())
                    devices.getCaptureDevMedia().startTransmit(audio)

        def report(self) -> CallReport:
            return CallReport(self.status, self.ringing_ms, self.confirmed_ms, self.reason)

        def hangup_quietly(self, prm: Any = None) -> None:
            try:
                self.hangup(prm or self.handset.pj.CallOpParam(True))
            except Exception:
                pass

        def release(self) -> None:
            self.player = None
            self.recorder = None  # destroyed here: the WAV header is written now

    class Buddy(pj.Buddy):  # type: ignore[misc]
        def __init__(self, handset: Handset, uri: str) -> None:
            super().__init__()
            self.handset, self.uri = handset, uri
            self.last = ""

        @_callback
        def onBuddyState(self) -> None:
            status = self.getInfo().presStatus.status
            shown = {pj.PJSUA_BUDDY_STATUS_ONLINE: "online", pj.PJSUA_BUDDY_STATUS_OFFLINE: "offline"}.get(status)
            if shown is not None and shown != self.last:  # not yet known, or unchanged: nothing to say
                self.last = shown
                self.handset.say(f"presence {self.uri}: {shown}")

    return Account, Call, Buddy


_Account: Any
_Call: Any
_Buddy: Any


try:
    _Account, _Call, _Buddy = _make_classes()
except ImportError:  # no pjsua2 here: Handset() fails with a clear error through available()
    pass
