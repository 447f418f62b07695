"""Account name history, the time of the listing a post's slides follow, cleaned-text records.

- `raw.account_names`: every username an account was seen under (an Instagram rename keeps the
  account, its id and posts; the old name stays here), filled from the current names.
- `raw.posts.listed_at`: when the listing the stored slides and fields follow was seen (live
  collection: when it was fetched; an archive: when instaloader wrote the post file). An older
  listing imported later no longer moves slides the newer one placed.
- `raw.posts.cleaned`, `raw.accounts.cleaned`: the fields whose text held characters Postgres
  refuses (NUL, lone surrogates) and was stored cleaned.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "account_names",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(30), nullable=False),
        sa.Column("seen_from", TS, nullable=False),
        sa.Column("seen_until", TS, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "username", name="pk_account_names"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["raw.accounts.id"],
            name="fk_account_names_account_id_accounts",
            ondelete="CASCADE",
        ),
        schema="raw",
    )
    op.create_index("ix_account_names_username", "account_names", ["username"], schema="raw")
    op.execute(
        "INSERT INTO raw.account_names (account_id, username, seen_from, seen_until) "
        "SELECT id, username, created_at, updated_at FROM raw.accounts"
    )
    op.add_column("posts", sa.Column("listed_at", TS), schema="raw")
    op.add_column("posts", sa.Column("cleaned", postgresql.ARRAY(sa.Text())), schema="raw")
    op.add_column("accounts", sa.Column("cleaned", postgresql.ARRAY(sa.Text())), schema="raw")


def downgrade() -> None:
    op.drop_column("accounts", "cleaned", schema="raw")
    op.drop_column("posts", "cleaned", schema="raw")
    op.drop_column("posts", "listed_at", schema="raw")
    op.drop_index("ix_account_names_username", table_name="account_names", schema="raw")
    op.drop_table("account_names", schema="raw")
