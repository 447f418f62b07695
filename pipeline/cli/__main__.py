"""`python -m pipeline.cli`: the same as the `catalogue` console script."""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
