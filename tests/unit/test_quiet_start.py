"""TensorFlow's C++ start-up notices stay out of the catalogue's output; real errors do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.train.quiet_start import is_notice

REPO = Path(__file__).resolve().parent.parent.parent
NOTICES = (
    "I0000 00:00:1796533437.732254   29154 port.cc:153] oneDNN custom operations are on. You may",
    "I0000 00:00:1796533437.732649   29154 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796533440.663011   29154 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)


def test_notices_are_told_from_errors():
    assert all(is_notice(line, gpu=False) for line in NOTICES)
    assert not is_notice("E0000 00:00:1.0 1 op_kernel.cc:1] OOM when allocating tensor", gpu=False)
    assert not is_notice("Traceback (most recent call last):", gpu=False)
    # with an NVIDIA device, CUDA's failures mean something
    assert not is_notice(NOTICES[2], gpu=True) and is_notice(NOTICES[0], gpu=True)


def test_a_training_command_prints_only_its_own_line(tmp_path):
    pytest.importorskip("tensorflow")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "train", "--from-export",
         str(tmp_path / "missing.npz"), "--out", str(tmp_path / "out")],
        env={**os.environ, "KERAS_BACKEND": "tensorflow"}, cwd=REPO,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("catalogue:"), result.stderr
