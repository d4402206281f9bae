"""Build of the optional C accelerators: ``pipeline.format._s2block`` (the S2 block decoder used by pipeline/format/s2.py) and
``pipeline.format._natsarc`` (the NATSARC1 message walk behind pipeline.format.natsarc.count_archive, the backup's census).

Everything else about the package is in pyproject.toml. The extensions are optional: when there is no C compiler
(or no Python headers), or a build fails for any other reason, the install goes on without it and pipeline.format.s2 and
pipeline.format.natsarc use their pure-Python code. Set JSARCHIVE_NO_EXTENSIONS=1 to skip the build on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the accelerator is an optimization, never a requirement."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - e.g. DistutilsPlatformError: no compiler at all
            self._skipped("the C extensions", e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - CompileError, LinkError, DistutilsExecError, OSError, ...
            self._skipped(ext.name, e)

    def _skipped(self, what: str, e: BaseException) -> None:
        sys.stderr.write(
            f"WARNING: could not build {what} ({type(e).__name__}: {e}); "
            "jsarchive works without it, using its slower pure-Python code\n"
        )


skip = os.environ.get("JSARCHIVE_NO_EXTENSIONS", "") not in ("", "0")
extensions = (
    []
    if skip
    else [
        Extension("pipeline.format._s2block", ["pipeline/format/_s2block.c"], optional=True),
        Extension("pipeline.format._natsarc", ["pipeline/format/_natsarc.c"], optional=True),
    ]
)

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
