"""Build glue for the C sandbox (the cffi library and the helper); the metadata lives in pyproject.toml."""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HELPER = "conveyor-sandbox-helper"


class BuildExtWithHelper(build_ext):
    """Build the cffi extension, then the sandbox helper executable beside it."""

    def run(self) -> None:
        super().run()
        target = Path(self.get_ext_fullpath("conveyor_sandbox._csandbox")).parent / HELPER
        target.parent.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
        # no C library at all (csrc/helper.c has its own _start and system calls): a static
        # glibc's start-up alone costs every run a few hundred microseconds on a VM
        subprocess.run([cc, "-O2", "-Wall", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector",
                        "-fno-pie", "-no-pie", "-s", "-Icsrc", "-o", str(target), "csrc/helper.c"], check=True)
        target.chmod(0o755)


setup(
    cffi_modules=["conveyor_sandbox/_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithHelper},
)
