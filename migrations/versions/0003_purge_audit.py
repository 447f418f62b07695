"""raw.purges: the audit record of takedown requests (`catalogue purge`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purges",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column(
            "requested_by", sa.Text(), server_default=sa.text("current_user"), nullable=False
        ),
        sa.Column("posts", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("objects_deleted", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_purges"),
        sa.CheckConstraint("target_kind IN ('account', 'post')", name="ck_purges_target_kind"),
        schema="raw",
    )


def downgrade() -> None:
    op.drop_table("purges", schema="raw")
