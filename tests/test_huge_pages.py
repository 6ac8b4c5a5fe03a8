"""rnnlm/fast/huge_pages.py: when a command re-executes itself with huge pages, and that it then gets them."""

import os
import platform
import subprocess
import sys

import pytest

from rnnlm.fast.huge_pages import DONE, THP_MODE, TUNABLE, reexec_environment

GLIBC = ("glibc", "2.36")
MADVISE = "always [madvise] never\n"


@pytest.mark.parametrize("environ, system, libc, thp, want", [
    ({}, "linux", GLIBC, MADVISE, f"{TUNABLE}=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux", GLIBC, MADVISE, f"glibc.malloc.arena_max=2:{TUNABLE}=1"),
    ({"GLIBC_TUNABLES": f"{TUNABLE}=0"}, "linux", GLIBC, MADVISE, None),  # the user's choice, or our own exec
    ({"RNNLM_HUGE_PAGES": "0"}, "linux", GLIBC, MADVISE, None),
    ({"RNNLM_HUGE_PAGES": "Off"}, "linux", GLIBC, MADVISE, None),
    ({DONE: "1"}, "linux", GLIBC, MADVISE, None),  # the tunable was dropped on the way: no second exec
    ({}, "linux", ("glibc", "2.35"), MADVISE, f"{TUNABLE}=1"),
    ({}, "linux", ("glibc", "2.34"), MADVISE, None),  # the tunable came with 2.35
    ({}, "linux", ("", ""), MADVISE, None),  # musl
    ({}, "linux", GLIBC, "[always] madvise never\n", None),  # huge pages already
    ({}, "linux", GLIBC, "always madvise [never]\n", None),
    ({}, "darwin", ("", ""), "", None),
])
def test_when_to_reexecute(environ, system, libc, thp, want):
    env = reexec_environment(dict(environ, PATH="/bin"), system, libc, thp)
    assert (env and env["GLIBC_TUNABLES"]) == want
    if env:
        assert env["PATH"] == "/bin"  # the rest of the environment travels unchanged
        assert reexec_environment(env, system, libc, thp) is None  # and the new process runs on


def _python(code, env):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def _thp_mode():
    return THP_MODE.read_text() if THP_MODE.exists() else ""


def _this_machine_env():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RNNLM_HUGE_PAGES", DONE)}
    return env, reexec_environment(env, sys.platform, platform.libc_ver(), _thp_mode())


def test_the_process_is_replaced_with_the_tunable_set():
    env, expected = _this_machine_env()
    code = "import os; from rnnlm.fast.huge_pages import reexec_with_huge_pages as r; r(); print(os.environ.get('GLIBC_TUNABLES'))"
    assert _python(code, env) == (expected["GLIBC_TUNABLES"] if expected else "None")


def test_the_tunable_puts_a_large_malloc_on_huge_pages():
    """The premise of the exec: without the tunable a 64 MiB malloc gets 4 KiB pages, with it huge ones."""
    env, expected = _this_machine_env()
    if expected is None:  # nothing to gain here, and nothing is done: the decision is what is checked
        assert reexec_environment(env, sys.platform, platform.libc_ver(), _thp_mode()) is None
        return
    code = ("import ctypes, re; libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p; "
            "n = 64 << 20; p = libc.malloc(n); ctypes.memset(p, 1, n); "
            "print(re.search(r'AnonHugePages:\\s+(\\d+)', open('/proc/self/smaps_rollup').read()).group(1))")
    assert int(_python(code, env)) == 0
    assert int(_python(code, expected)) >= 32 * 1024  # kB: at least half of the buffer on 2 MiB pages


@pytest.mark.parametrize("command, reexecutes", [("train", True), ("sweep", True), ("bench", True),
                                                 ("eval", False), ("corpora", False), ("generate", False)])
def test_only_commands_that_train_or_measure_reexecute(monkeypatch, command, reexecutes):
    import rnnlm.__main__ as entry_point
    import rnnlm.cli
    calls = []
    monkeypatch.setattr(entry_point, "reexec_with_huge_pages", lambda: calls.append(command))
    monkeypatch.setattr(rnnlm.cli, "main", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["rnnlm", command, "--help"])
    with pytest.raises(SystemExit):
        entry_point.entry()
    assert calls == ([command] if reexecutes else [])
