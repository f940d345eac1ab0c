"""The core and the handset machine are sans-I/O: they must not import I/O, clocks,
randomness or threads (DESIGN.md)."""

import ast
from pathlib import Path

import peerphone.core
import peerphone.phone
import pytest

FORBIDDEN = {"asyncio", "socket", "time", "random", "secrets", "os", "threading", "selectors", "subprocess",
             "signal", "datetime", "uvloop", "pjsua2", "RPi", "gpiozero", "lgpio", "alsaaudio"}
# Certificates need their validity as datetimes: security.py writes RFC 5280's "no expiry"
# constants with it, and the test below makes sure nothing in the core reads the clock.
ALLOWED = {"security.py": {"datetime"}}
CLOCK_READS = {"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp"}
CORE = Path(peerphone.core.__file__).parent
PHONE = Path(peerphone.phone.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("<dynamic import>")
    return roots


def test_core_files_exist():
    assert len(list(CORE.rglob("*.py"))) >= 10


@pytest.mark.parametrize("package", [CORE, PHONE], ids=["core", "phone"])
def test_sans_io_packages_import_no_io_clock_randomness_or_threads(package):
    offenders = {
        str(path.relative_to(package)): sorted(_imported_roots(path) & (FORBIDDEN | {"<dynamic import>"})
                                               - ALLOWED.get(str(path.relative_to(package)), set()))
        for path in package.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    clock_reads = [f"{path.name}:{node.lineno}" for path in package.rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)
                   and node.attr in CLOCK_READS]
    assert clock_reads == []


def test_the_handset_machine_imports_nothing_of_the_package():
    for path in PHONE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and (node.level or "peerphone" in (node.module or ""))), path


def test_checker_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import os\nfrom time import monotonic\n")
    assert _imported_roots(sample) == {"os", "time"}


def test_core_imports_nothing_of_the_package_outside_itself():
    for path in CORE.rglob("*.py"):
        depth = len(path.relative_to(CORE).parts)  # a relative import this deep is still inside core
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > depth:
                assert (node.module or "").startswith("_accel"), (path, node.module)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("peerphone"):
                assert node.module.startswith(("peerphone.core", "peerphone._accel")), (path, node.module)
