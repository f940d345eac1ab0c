"""The optional native module; everything else about the package is in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent / "native"))
from build_native import ffibuilder  # noqa: E402

native = ffibuilder.distutils_extension(tmpdir="build/cffi")
native.optional = True  # no C compiler: a warning, and the pure-Python twins do the work
setup(ext_modules=[native])
