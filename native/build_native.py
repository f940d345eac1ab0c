"""cffi build script (out-of-line API mode) of `peerphone._accel._native`.

setup.py hands `ffibuilder` to setuptools, so `pip install .` (and `pip install -e .`)
compiles the module where a C compiler exists; where none does the install goes
on without it and the package runs its pure-Python twins. The header is the
declaration: one source of truth for C and Python.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

NATIVE = Path("native")  # setuptools wants paths relative to the project root, where setup.py runs

ffibuilder = FFI()
ffibuilder.cdef((Path(__file__).resolve().parent / "peerphone_native.h").read_text())
ffibuilder.set_source(
    "peerphone._accel._native",
    '#include "peerphone_native.h"',
    sources=[str(NATIVE / "peerphone_native.c")],
    include_dirs=[str(NATIVE)],
    extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"],
)
