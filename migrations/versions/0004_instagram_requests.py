"""raw.instagram_requests: the rate controller's request history, shared by tasks and runs.

instaloader's RateController keeps its sliding windows in memory; each Airflow task is a new
process, so the history lives here and every collection starts from what Instagram has seen.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instagram_requests",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("session", sa.Text(), nullable=False),
        sa.Column("query_type", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instagram_requests"),
        schema="raw",
    )
    op.create_index(
        "ix_instagram_requests_session_requested_at",
        "instagram_requests",
        ["session", "requested_at"],
        schema="raw",
    )


def downgrade() -> None:
    op.drop_table("instagram_requests", schema="raw")
