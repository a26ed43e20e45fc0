"""Language specs: how to compile and run a submission, supplied through ``conveyor_register_judges``."""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from conveyor_sandbox.contract import DEFAULT_PATH

#: what every box sees without being told: the sandbox's allow-listed root (docs/sandbox.md)
BOX_ROOT_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives",
                 "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


def judge_path() -> str:
    """The PATH toolchains are looked up on, inside and outside the sandbox (``CONVEYOR_JUDGE_PATH``)."""
    return os.environ.get("CONVEYOR_JUDGE_PATH") or DEFAULT_PATH


def sandbox_env() -> dict[str, str]:
    """The environment compilers and programs get."""
    return {"PATH": judge_path(), "HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp"}


@dataclass(frozen=True)
class Language:
    """How to build and run one language; ``{dir}`` is the build directory, ``{mem_mib}`` the memory limit."""

    id: str
    name: str
    source_name: str
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    extensions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    version: tuple[str, ...] = ()
    time_factor: float = 1.0
    memory_factor: float = 1.0
    memory_extra_mib: int = 0  # runtime overhead allowed on top of the problem's limit (JVM, V8)
    address_space_grace_mib: int = 0  # added only where RLIMIT_AS is the sole memory bound
    pids: int = 16
    compile_pids: int = 64
    socket_errno: bool = False  # the runtime probes AF_INET sockets at start (JVM)
    memory_error_markers: tuple[bytes, ...] = ()
    compiles_to_native: bool = False
    paths: tuple[str, ...] = ()  # extra read-only host paths or globs every run needs (missing ones skipped)

    def argv(self, template: tuple[str, ...], build_dir: Path, mem_mib: int) -> list[str]:
        """Fill a command template."""
        return [a.format(dir=str(build_dir), mem_mib=mem_mib, src=self.source_name) for a in template]

    def available(self) -> tuple[bool, str]:
        """Whether every tool is on the judge PATH and reachable by sandbox uids; else why not."""
        found = []
        for tool in self.tools:
            path = shutil.which(tool, path=judge_path())
            if path is None:
                return False, f"{tool} not found on {judge_path()} (install it, or set CONVEYOR_JUDGE_PATH)"
            blocked = unreachable(path)
            if blocked:
                return False, (f"{path} cannot be reached by sandbox uids ({blocked}); install the toolchain "
                               "system-wide or put a copy on CONVEYOR_JUDGE_PATH")
            found.append(path)
        return True, ", ".join(found)

    def box_paths(self) -> list[str]:
        """Read-only paths each compile and run of this language gets: ``paths``, toolchains outside the box root."""
        found: list[str] = []
        for pattern in self.paths:
            found += sorted(glob.glob(pattern))
        for tool in self.tools:
            path = shutil.which(tool, path=judge_path())
            if path is not None:
                found += toolchain_paths(path)
        return minimal_paths(p for p in found if os.path.exists(p))

    def version_text(self) -> str:
        """First line of the toolchain's version output, or ''."""
        if not self.version:
            return ""
        try:
            p = subprocess.run(self.version, capture_output=True, timeout=20, env={"PATH": judge_path()})
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (p.stdout or p.stderr).decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text else ""


def in_box_root(path: str) -> bool:
    """Whether the sandbox shows ``path`` to every box without a read-only bind."""
    return any(path == d or path.startswith(d + "/") for d in BOX_ROOT_DIRS)


def toolchain_paths(path: str) -> list[str]:
    """What a box needs to run the tool at ``path``: every link on the way and the toolchain outside the box root.

    ``/usr/bin/java`` links through ``/etc/alternatives``; a rustup toolchain copied to
    ``/opt/rust/bin/rustc`` needs ``/opt/rust`` (its ``lib`` beside ``bin``).
    """
    out: list[str] = []
    cur = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on a chain of links
        if not in_box_root(cur):
            parent = os.path.dirname(cur)
            out.append(os.path.dirname(parent) if os.path.basename(parent) == "bin" and not os.path.islink(cur)
                       else parent)
        if not os.path.islink(cur):
            break
        cur = os.path.normpath(os.path.join(os.path.dirname(cur), os.readlink(cur)))
    real = os.path.realpath(path)
    if not in_box_root(real):
        parent = os.path.dirname(real)
        out.append(os.path.dirname(parent) if os.path.basename(parent) == "bin" else parent)
    return out


def minimal_paths(paths: Iterable[str]) -> list[str]:
    """Unique absolute paths, without those inside another one of the list, in a stable order."""
    uniq = sorted({os.path.abspath(p) for p in paths})
    out: list[str] = []
    for p in uniq:
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def unreachable(path: str) -> str:
    """Why a box uid (not root, no groups) could not execute ``path``, or '' if it can."""
    if os.geteuid() != 0:
        return ""  # the fallback sandbox runs programs as the caller
    real = Path(os.path.realpath(path))
    for d in [*reversed(real.parents), real.parent]:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            return f"{d} is mode {stat.S_IMODE(mode):04o}"
    if not real.stat().st_mode & stat.S_IXOTH:
        return f"{real} is not executable by others"
    return ""


_NATIVE_OOM = (b"std::bad_alloc", b"memory allocation of", b"Cannot allocate memory")

FIRST_PARTY: tuple[Language, ...] = (
    Language("c", "C (gcc, C17)", "main.c", ("{dir}/main",),
             ("gcc", "-O2", "-std=gnu17", "-pipe", "-o", "main", "main.c", "-lm"),
             extensions=(".c",), tools=("gcc",), version=("gcc", "--version"), memory_error_markers=_NATIVE_OOM,
             compiles_to_native=True),
    Language("cpp", "C++17 (g++ -O2)", "main.cpp", ("{dir}/main",),
             ("g++", "-O2", "-std=gnu++17", "-pipe", "-o", "main", "main.cpp"),
             extensions=(".cpp", ".cc", ".cxx", ".c++"), aliases=("1", "c++", "cpp17", "g++"), tools=("g++",),
             version=("g++", "--version"), memory_error_markers=_NATIVE_OOM, compiles_to_native=True),
    Language("cpp20", "C++20 (g++ -O2)", "main.cpp", ("{dir}/main",),
             ("g++", "-O2", "-std=gnu++20", "-pipe", "-o", "main", "main.cpp"),
             aliases=("c++20",), tools=("g++",), version=("g++", "--version"), memory_error_markers=_NATIVE_OOM,
             compiles_to_native=True),
    Language("python3", "Python 3", "main.py", ("python3", "-B", "{dir}/main.py"),
             ("python3", "-c", "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')", "main.py"),
             extensions=(".py",), aliases=("py", "python", "py3"), tools=("python3",),
             version=("python3", "--version"), time_factor=2.0, memory_error_markers=(b"MemoryError",)),
    Language("java", "Java (javac/java, class Main)", "Main.java",
             ("java", "-Xmx{mem_mib}m", "-Xss64m", "-XX:+UseSerialGC", "-XX:ReservedCodeCacheSize=32m",
              "-XX:MaxMetaspaceSize=64m", "-cp", "{dir}", "Main"),
             ("javac", "-encoding", "UTF-8", "-J-Xmx512m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1",
              "Main.java"),
             extensions=(".java",), aliases=("java17",), tools=("javac", "java"), version=("java", "-version"),
             time_factor=2.0, memory_extra_mib=160, address_space_grace_mib=2048, pids=64, compile_pids=128,
             socket_errno=True, memory_error_markers=(b"java.lang.OutOfMemoryError",),
             # Debian's JDK links its conf/ and lib/ files into /etc/java-17-openjdk
             paths=("/etc/java-*",)),
    Language("rust", "Rust (rustc -O, edition 2021)", "main.rs", ("{dir}/main",),
             ("rustc", "-O", "--edition", "2021", "-o", "main", "main.rs"),
             extensions=(".rs",), aliases=("rs",), tools=("rustc", "cc"), version=("rustc", "--version"),
             compile_pids=128, memory_error_markers=_NATIVE_OOM, compiles_to_native=True),
    Language("javascript", "JavaScript (Node.js)", "main.js",
             ("node", "--max-old-space-size={mem_mib}", "{dir}/main.js"), ("node", "--check", "main.js"),
             extensions=(".js", ".mjs", ".cjs"), aliases=("js", "node", "nodejs"), tools=("node",),
             version=("node", "--version"), time_factor=2.0, memory_extra_mib=64, address_space_grace_mib=4096,
             pids=32, memory_error_markers=(b"JavaScript heap out of memory", b"Allocation failed")),
)
