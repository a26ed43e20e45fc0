"""cffi (API mode) build of the C sandbox library in csrc/: ``conveyor_sandbox._csandbox``."""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parents[1] / "csrc"

CDEF = """
struct sbx_config {
    const char *helper;
    char *const *argv;
    char *const *envp;
    int stdin_fd;
    int clone_flags;
    int64_t wall_ms;
    int64_t cpu_ms;
    int64_t output_cap;
    char *out_buf;
    char *err_buf;
    const char *cg_v2;
    int cg_v2_memory;
    int cg_v2_pids;
    const char *cg_v1_memory;
    const char *cg_v1_pids;
    int64_t memory_limit;
    int64_t pids_limit;
    int output_kill;
};
struct sbx_result {
    int32_t stage;
    int32_t err;
    int32_t have_status;
    int32_t wstatus;
    int64_t cpu_us;
    int32_t cpu_from_cgroup;
    int64_t wall_us;
    int64_t peak_bytes;
    int32_t mem_source;
    int64_t maxrss_kib;
    int64_t out_len;
    int64_t err_len;
    int32_t oom_killed;
    int32_t killed_wall;
    int32_t killed_cpu;
    int32_t used_cgroup_kill;
    int32_t helper_pid;
    int32_t disk_full;
    int64_t tmp_bytes;
    int32_t killed_output;
};
int sbx_run(const struct sbx_config *cfg, struct sbx_result *res);
void sbx_set_spares(int n);
void sbx_flush(int drop_spares);
"""


def _rel(path: Path) -> str:
    # setuptools wants sources relative to the setup.py directory
    return os.path.relpath(path, Path.cwd())


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "conveyor_sandbox._csandbox",
    '#include "sandbox.h"',
    sources=[_rel(CSRC / "sandbox.c")],
    include_dirs=[_rel(CSRC)],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
