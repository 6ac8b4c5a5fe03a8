"""Large host buffers on transparent huge pages: commands that train or measure re-execute themselves once.

XLA's CPU client takes every step's temporaries from malloc, and glibc serves
the large ones as fresh mappings that are unmapped again when the step frees
them, so the next step faults its buffers back in 4 KiB at a time (a char GRU
train step: ~105,000 faults; their cost is in docs/levers.md). glibc >= 2.35 can ask for
transparent huge pages for malloc's memory (the tunable `glibc.malloc.hugetlb=1`:
2 MiB faults, 512 times fewer), but it reads tunables only when a process
starts, hence one `execve` before anything heavy is imported. Nothing is kept that the step would not
hold anyway, unlike switching glibc's trimming and mmap off (which sped the
step up as much but let the heap grow to twice its size).

Only `rnnlm train`, `rnnlm sweep` and `rnnlm bench` (and `python -m rnnlm.bench`)
call `reexec_with_huge_pages`, never an import; it is a no-op where it cannot help,
RNNLM_HUGE_PAGES=0 turns it off, and training says so in one line (`NOTICE`).
Under `python -c CODE` the code before the call runs twice (once per process).
"""

from __future__ import annotations

import os
import pathlib
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
# Set in the new process's environment: a glibc that drops the tunable (setuid or
# file-capability interpreters) must not make every exec start another.
DONE = "RNNLM_HUGE_PAGES_EXECUTED"
OFF = ("0", "false", "no", "off")
THP_MODE = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
COMMANDS = ("train", "sweep", "bench")  # the commands that train or measure
NOTICE = "host memory: malloc on transparent huge pages (this command re-executed itself once; RNNLM_HUGE_PAGES=0: off)"


def _glibc_at_least(version: str, wanted=(2, 35)) -> bool:
    try:
        return tuple(int(part) for part in version.split(".")[:2]) >= wanted
    except ValueError:
        return False


def reexec_environment(environ, system: str, libc: tuple[str, str], thp_mode: str):
    """The environment to re-execute with, or None when the process should run as it is.

    Args:
      environ: the current environment.
      system: `sys.platform`.
      libc: `platform.libc_ver()`, e.g. ("glibc", "2.36").
      thp_mode: the kernel's transparent_hugepage/enabled line, e.g. "always [madvise] never".
    """
    if environ.get("RNNLM_HUGE_PAGES", "1").lower() in OFF or DONE in environ:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in tunables:  # already set, by us or by the user: respect it either way
        return None
    # "[always]": every large mapping gets huge pages already; "[never]": none can.
    if system != "linux" or libc[0] != "glibc" or not _glibc_at_least(libc[1]) or "[madvise]" not in thp_mode:
        return None
    return dict(environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, f"{TUNABLE}=1"])), **{DONE: "1"})


def reexec_with_huge_pages() -> None:
    """Replace this process by the same command line with huge pages on, where that applies."""
    try:
        thp_mode = THP_MODE.read_text()
    except OSError:
        return
    env = reexec_environment(os.environ, sys.platform, platform.libc_ver(), thp_mode)
    # A script read from stdin cannot be read again; an embedded interpreter has no executable.
    if env is None or not sys.executable or sys.orig_argv[1:2] == ["-"]:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # orig_argv keeps the interpreter's own options and `-m module` or the script path.
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # run on as we are: only slower


def active() -> bool:
    """Whether this process runs with the tunable that `reexec_with_huge_pages` sets."""
    return os.environ.get(DONE) == "1" and f"{TUNABLE}=1" in os.environ.get("GLIBC_TUNABLES", "")
