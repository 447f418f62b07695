"""Running the `catalogue` command as a user does: a subprocess with its own environment."""

from __future__ import annotations

import subprocess
import sys


def catalogue(env: dict[str, str], *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
