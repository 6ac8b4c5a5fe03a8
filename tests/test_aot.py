"""rnnlm/aot.py: the train step compiled for 8 fake CPU devices, nothing trained."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_compile_check_on_8_fake_devices():
    out = subprocess.run([sys.executable, "-m", "rnnlm", "compile-check", "--devices", "8", "--vocab-size", "50",
                          "--config", "experiments/default.py:tiny", "--config.train.batch_size=16"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "for 8 devices (2 streams each" in out.stdout
