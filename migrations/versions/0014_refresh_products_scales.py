"""`catalogue.refresh_products` at a million pictures: its cost follows the pictures asked for.

0011's function joined a temporary table (no statistics, no index) to itself for the colour and
the category, which the planner did by nested sequential scans: fine for a predict batch of 256
pictures, about 17 minutes for a relabel job of 100,000 (the label trigger refreshes every picture
a job touches). The same rule (`catalogue.shown_label`, live pictures only) is now one statement:
each picture's newest label per attribute is a backward probe of `ix_labels_image_id_attribute_id`
and colour and category are picked by `FILTER` aggregates. The text is
`migrations/sql/refresh_products.0014.sql`.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).parents[1] / "sql"  # functions other revisions redefine, as applied


def upgrade() -> None:
    op.execute((SQL / "refresh_products.0014.sql").read_text())


def downgrade() -> None:
    op.execute((SQL / "refresh_products.0011.sql").read_text())
