"""The availability trigger does nothing when availability did not change.

`INSERT ... ON CONFLICT DO UPDATE` fires a table's statement-level UPDATE triggers even when no
row conflicted, so every stored post fired `availability_reaches_marketplace` twice (posts and
images), and each call ran `catalogue.refresh_products` on an empty list: a temporary table
created and truncated, four statements, twice per post. On an archive import of 10,000 pictures
that was most of Postgres's CPU time. The trigger now collects the changed images first and calls
`refresh_products` only when there are some.

The functions that later revisions redefine are read from `migrations/sql/NAME.REV.sql` (since
issue 23), so a downgrade restores the previous definition from its file instead of slicing it
out of this one; the SQL run is unchanged except `CREATE OR REPLACE` where one file serves an
upgrade and a downgrade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SQL = Path(__file__).parents[1] / "sql"  # functions other revisions redefine, as applied


def upgrade() -> None:
    op.execute((SQL / "availability_reaches_marketplace.0008.sql").read_text())


def downgrade() -> None:
    op.execute((SQL / "availability_reaches_marketplace.0007.sql").read_text())
