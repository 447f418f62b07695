"""The header of a benchmark's result file: which commit, which machine, when. Needs nothing
but the standard library, so a benchmark on the GPU machine (no database, no object store) can
write one too."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def result_header(name: str) -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip() or os.environ.get("CATALOGUE_COMMIT", "")
    changed = subprocess.run(
        # results files change while a benchmark runs; they are not the code that ran
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if commit and changed:  # the code that ran is not the commit alone: say so
        commit += "+changes"
    return {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
