"""The SD-card image's boot check, run by `tools/image --boot-test` (as root).

1. The image boots under -M virt (qemu-system-aarch64 or qemu-system-arm, by the image's
   architecture) with its own kernel and initrd, on a
   peerphone.toml (written to its FAT partition, as a person would) that names peers on this
   machine. Its network is qemu's user mode only: the peers run in a network namespace of
   ours that holds 10.0.2.2, the address qemu gives this machine inside the guest, so every
   node of the overlay is reached at 10.0.2.2 and a port (the guest's through hostfwd).
   systemd starts the phone; it joins and registers; a phone here calls it with a 1 kHz tone,
   and the tone is looked for, on the guest, in what its ALSA earpiece wrote.
2. A peerphone.toml with a mistake: the phone stays stopped, one line on the console says
   why, and root logs in.
3. The image boots to multi-user as the nearest Pi qemu has (-M raspi3b for arm64, -M raspi2b
   for armhf) with that Pi's device tree from its own FAT partition.

Everything runs from a scratch directory and is stopped by PID; the namespace is removed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from peerphone.app.procs import stop_process

from tests.procs import LineProc

HOST = "10.0.2.2"  # this machine, as qemu's user-mode network shows it to the guest
GUEST_PORT, GUEST_SIP, GUEST_RTP, RTP_PORTS = 16084, 15060, 14000, 20
FAT_OFFSET = "1M"  # tools/image puts the FAT partition at 1 MiB
BOOT_S = 900  # a whole Debian boot under TCG on a shared 2-core machine
DOMAIN = "peerphone.local"
GOOD = f"""aor = "sip:pi@{DOMAIN}"
overlay = "{DOMAIN}"
bootstrap = ["{HOST}:20001"]
board = "qemu-virt"
advertise = "{HOST}"
port = {GUEST_PORT}
sip_port = {GUEST_SIP}
rtp_port = {GUEST_RTP}
"""
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, bracketed paste
CONSOLE_NOISE = re.compile(r"^\[\s*\d+\.\d+\] ")  # the kernel's and the services' console lines
BROKEN = GOOD.replace('"sip:pi@', '"pi@')


@dataclass(frozen=True)
class Arch:
    qemu: str
    cpu: str
    virt: str  # -M virt, and its options
    machine: str  # what platform.machine() says on the guest
    pi: str  # the nearest Raspberry Pi qemu has
    pi_dtb: str  # its device tree, as raspi-firmware puts it on the FAT partition


ARCHES = {
    "arm64": Arch("qemu-system-aarch64", "cortex-a72", "virt", "aarch64", "raspi3b", "bcm2837-rpi-3-b.dtb"),
    # armmp is not an LPAE kernel: no memory or PCI windows above 4 GiB
    "armhf": Arch("qemu-system-arm", "cortex-a15", "virt,highmem=off", "armv7l", "raspi2b", "bcm2836-rpi-2-b.dtb"),
}


def run(*cmd: str, timeout: float = 60) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout).stdout


class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name
        run("ip", "netns", "add", name)
        try:
            self.exec("ip", "link", "set", "lo", "up")
            self.exec("ip", "addr", "add", f"{HOST}/32", "dev", "lo")
        except BaseException:
            self.remove()
            raise

    def exec(self, *cmd: str) -> str:
        return run("ip", "netns", "exec", self.name, *cmd)

    def command(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class Console:
    """The guest's serial port, through a socket: everything it says goes to a log file, and a
    person's keystrokes go in (a login and commands)."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path, self.log = path, log
        self.text = ""
        self.mark = 0  # expect() looks after this
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None

    def attach(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(self.path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.sock is not None
        with self.log.open("a", encoding="utf-8") as out:
            while chunk := self.sock.recv(4096):
                text = chunk.decode(errors="replace")
                out.write(text)
                out.flush()
                with self.lock:
                    self.text += text

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:  # an escape sequence can straddle two reads: cleaned as a whole
                match = re.compile(pattern, re.M | re.S).search(self.clean(), self.mark)
            if match:
                self.mark = match.end()
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"the console never said {pattern!r} in {timeout:.0f} s; "
                                     f"its last lines: {self.clean()[-1500:]}")
            time.sleep(0.2)

    def clean(self) -> str:
        return ESCAPES.sub("", self.text.replace("\r", ""))

    def send(self, line: str) -> None:
        assert self.sock is not None
        self.sock.sendall(line.encode() + b"\r")

    def login(self) -> None:
        """As root, who has no password until one is set (the image says so)."""
        deadline = time.monotonic() + BOOT_S
        while True:  # an empty line makes getty ask again: its prompt may be long gone by
            self.send("")
            try:
                self.expect(r"login: ", 10)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        self.send("root")
        self.expect(r"root@\S+:~# ", 60)
        self.send("stty -echo; export TERM=dumb")

    def shell(self, command: str, timeout: float = 120) -> str:
        """Run `command` as root on the guest; what it printed (without the kernel's and the
        services' lines on the console between)."""
        stamp = f"{time.monotonic_ns():x}"
        self.send(f"echo begin-{stamp}; {command}; echo end-{stamp}")
        out = self.expect(rf"begin-{stamp}\n(.*?)^end-{stamp}$", timeout).group(1)
        return "".join(line for line in out.splitlines(keepends=True) if not CONSOLE_NOISE.match(line))


class Guest:
    def __init__(self, scratch: Path, qemu: str, machine: list[str], ns: Namespace | None, name: str) -> None:
        self.monitor = scratch / f"{name}.monitor"
        self.console = Console(scratch / f"{name}.serial", scratch / f"{name}.console.log")
        cmd = [qemu, *machine, "-display", "none", "-no-reboot",
               "-serial", f"unix:{self.console.path},server=on,wait=off",
               "-monitor", f"unix:{self.monitor},server=on,wait=off"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(ns.command(*cmd) if ns else cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=(scratch / f"{name}.qemu.log").open("w"))
        self.console.attach()

    def since_start(self) -> float:
        return time.monotonic() - self.started

    def power_off(self, timeout: float = 120) -> bool:
        """The power button (ACPI on virt): systemd stops the phone, which leaves the overlay. True
        when the guest shut down by itself."""
        with socket.socket(socket.AF_UNIX) as mon:
            mon.connect(str(self.monitor))
            mon.sendall(b"system_powerdown\n")
            try:
                self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False

    def stop(self) -> None:
        stop_process(self.proc, grace_s=5)


def fat_write(image: Path, name: str, text: str, scratch: Path) -> None:
    (scratch / name).write_text(text)
    run("mcopy", "-o", "-i", f"{image}@@{FAT_OFFSET}", str(scratch / name), f"::/{name}")


def virt(args: argparse.Namespace, image: Path, forwards: list[str]) -> list[str]:
    fwd = ",".join(f"hostfwd={f}" for f in forwards)
    arch = ARCHES[args.arch]
    return ["-M", arch.virt, "-cpu", arch.cpu, "-m", "1024", "-smp", "2", "-kernel", str(args.kernel),
            "-initrd", str(args.initrd), "-append",
            "root=LABEL=RASPIROOT rw console=ttyAMA0 quiet systemd.show_status=1 modules-load=snd-aloop",
            "-drive", f"if=virtio,file={image},format=raw",
            "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-device,netdev=n0"]


def peer_in(ns: Namespace, n: int) -> LineProc:
    cmd = [sys.executable, "-m", "peerphone", "peer", "--listen", f"0.0.0.0:{20000 + n}", "--advertise", HOST,
           "--sip-listen", f"0.0.0.0:{25060 + n}"]
    if n > 1:
        cmd += ["--bootstrap", f"{HOST}:20001"]
    peer = LineProc.start(ns.command(*cmd))
    peer.expect(r"^sip ", timeout=30)
    return peer


def boot_and_call(args: argparse.Namespace, scratch: Path, ns: Namespace, figures: dict[str, str]) -> None:
    image = scratch / "call.img"
    run("cp", "--sparse=always", str(args.image), str(image))
    fat_write(image, "peerphone.toml", GOOD, scratch)
    forwards = [f"udp::{GUEST_PORT}-:{GUEST_PORT}", f"udp::{GUEST_SIP}-:{GUEST_SIP}", f"tcp::{GUEST_SIP}-:{GUEST_SIP}"]
    forwards += [f"udp::{p}-:{p}" for p in range(GUEST_RTP, GUEST_RTP + RTP_PORTS)]
    guest = Guest(scratch, ARCHES[args.arch].qemu, virt(args, image, forwards), ns, "virt")
    try:
        guest.console.expect(rf"registered sip:pi@{DOMAIN}", BOOT_S)
        figures["power-on to registered (virt, TCG)"] = f"{guest.since_start():.0f} s"
        print(f"boot test: the phone registered {guest.since_start():.0f} s after power-on", flush=True)
        call = subprocess.run(ns.command(sys.executable, "-m", "peerphone", "call", f"sip:pi@{DOMAIN}", "--proxy",
                                         f"{HOST}:25061", "--aor", f"sip:host@{DOMAIN}", "--tone", "1000",
                                         "--seconds", "4"), capture_output=True, text=True, timeout=120)
        assert call.returncode == 0, f"the call failed: {call.stdout}{call.stderr}"
        setup = next(line for line in call.stdout.splitlines() if line.startswith("setup: "))
        figures["call setup (host to emulated phone)"] = setup.removeprefix("setup: ")
        guest.console.login()
        # pjsua2 closes the sound device a second after the call, and ALSA completes the WAV then.
        closed = guest.console.shell(
            "timeout 60 sh -c 'while ls -l /proc/$(systemctl show -p MainPID --value peerphone)/fd "
            "| grep -q earpiece.wav; do sleep 0.1; done' && echo closed")
        assert closed.strip() == "closed", f"the earpiece stayed open: {closed!r}"
        found = guest.console.shell(
            "/opt/peerphone/bin/python3 -c 'import platform; from pathlib import Path; "
            "from peerphone.app.tone import dominant_frequency as f; "
            "print(platform.machine(), *f(Path(\"/var/lib/peerphone/earpiece.wav\")))'", timeout=300).split()
        print(f"boot test: the guest's earpiece: {found}", flush=True)
        machine, hz, level = found[0], float(found[1]), float(found[2])
        assert machine == ARCHES[args.arch].machine and abs(hz - 1000) <= 20 and level > 0.02, found
        figures["tone in the earpiece"] = f"{hz:.0f} Hz, level {level:.2f}"
        rss = guest.console.shell("grep VmRSS /proc/$(systemctl show -p MainPID --value peerphone)/status")
        figures[f"phone's RSS on {machine} (peer, front, handset)"] = rss.split(":", 1)[1].strip()
        assert guest.power_off(), "the guest did not power off"
        stopped = re.search(r"Stopped peerphone.service", guest.console.clean())
        assert stopped, "systemd did not say the phone stopped"
    finally:
        guest.stop()


def boot_with_a_broken_file(args: argparse.Namespace, scratch: Path) -> None:
    image = scratch / "broken.img"
    run("cp", "--sparse=always", str(args.image), str(image))
    fat_write(image, "peerphone.toml", BROKEN, scratch)
    guest = Guest(scratch, ARCHES[args.arch].qemu, virt(args, image, []), None, "broken")
    try:
        line = guest.console.expect(r"peerphone: error: /boot/firmware/peerphone.toml: aor: [^\n]*", BOOT_S).group(0)
        print(f"boot test: a broken peerphone.toml: the console says {line.strip()!r}", flush=True)
        guest.console.login()
        state = guest.console.shell("systemctl is-failed peerphone; systemctl show -p NRestarts --value peerphone")
        assert state.split() == ["failed", "0"], f"the phone should be stopped, not restarted: {state!r}"
        journal = guest.console.shell("journalctl -u peerphone -o cat | grep -c 'peerphone: error'")
        assert journal.strip() == "1", f"the journal should hold the line once: {journal!r}"
    finally:
        guest.stop()


def boot_as_a_pi(args: argparse.Namespace, scratch: Path, figures: dict[str, str]) -> None:
    arch = ARCHES[args.arch]
    image = scratch / "pi.img"
    run("cp", "--sparse=always", str(args.image), str(image))
    run("mcopy", "-o", "-i", f"{image}@@{FAT_OFFSET}", f"::/{arch.pi_dtb}", str(scratch / "pi.dtb"))
    machine = ["-M", arch.pi, "-kernel", str(args.kernel), "-initrd", str(args.initrd), "-dtb",
               str(scratch / "pi.dtb"), "-append",
               # The phone stays off here (it needs the virt board's loopback card): while a unit
               # writes to the console, systemd writes no status lines there, and those lines are
               # how this test sees multi-user where no getty answers.
               "root=LABEL=RASPIROOT rw console=ttyAMA0 quiet systemd.show_status=1 systemd.mask=peerphone.service",
               "-drive", f"if=sd,file={image},format=raw"]
    guest = Guest(scratch, arch.qemu, machine, None, "pi")
    try:
        # qemu's Pi 3 has no firmware behind its mailbox: the UART's pins stay unclaimed and no
        # getty answers on it, so systemd's own lines on the console say how far the boot got.
        # On the Pi 2 a getty answers (and systemd stops writing to the console it took): ask.
        seen = guest.console.expect(r"Reached target .*multi-user.target|peerphone login:", BOOT_S)
        if seen.group(0).endswith("login:"):
            guest.console.login()
            up = guest.console.shell("timeout 600 sh -c 'until systemctl is-active -q multi-user.target; "
                                     "do sleep 1; done' && echo multi-user", timeout=660)
            assert up.strip() == "multi-user", f"multi-user.target never became active: {up!r}"
        figures[f"power-on to multi-user ({arch.pi}, TCG)"] = f"{guest.since_start():.0f} s"
        print(f"boot test: -M {arch.pi} reached multi-user in {guest.since_start():.0f} s", flush=True)
    finally:
        guest.stop()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop qemu and the peers, remove the netns
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64", help="the image's architecture")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--kernel", type=Path, required=True)
    parser.add_argument("--initrd", type=Path, required=True)
    parser.add_argument("--only", choices=["virt", "broken", "pi"], help="one of the three boots")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (console logs)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pp-boot-"))
    figures: dict[str, str] = {}
    ns = Namespace(f"ppboot{int(time.time()) % 100000}")
    peers: list[LineProc] = []
    ok = False
    try:
        peers = [peer_in(ns, n) for n in (1, 2, 3)]
        if args.only in (None, "virt"):
            boot_and_call(args, scratch, ns, figures)
        if args.only in (None, "broken"):
            boot_with_a_broken_file(args, scratch)
        if args.only in (None, "pi"):
            boot_as_a_pi(args, scratch, figures)
        ok = True
    finally:
        for peer in peers:
            peer.stop()
        ns.remove()
        for name, value in figures.items():
            print(f"boot test: {name}: {value}")
        if ok and not args.keep:
            shutil.rmtree(scratch)
        else:
            print(f"boot test: logs in {scratch}", file=sys.stderr)
    print("boot test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
