"""The moderators' workbench (`catalogue web`): its people, their sessions, failed sign-ins.

- `catalogue.moderators`: a person who signs in to the workbench, with a role (`viewer` sees,
  `moderator` labels and runs jobs, `admin` also manages people) and a salted password hash
  (`pipeline.web.users`: scrypt, a salt of its own per person); disabled, never deleted, since
  labels and jobs name them.
- `catalogue.web_sessions`: signed-in browsers, by the SHA-256 of their cookie (the cookie itself
  is never stored), with the session's CSRF token and when it expires.
- `catalogue.login_failures`: failed sign-ins per name, read to slow down guessing.

Only the application role reads or writes these: the reader and moderator roles, which default
privileges give every new `catalogue` table, lose them here (password hashes are nobody's data).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = "('viewer', 'moderator', 'admin')"
TABLES = "catalogue.moderators, catalogue.web_sessions, catalogue.login_failures"


def _roles() -> dict[str, str]:
    names = context.config.attributes.get("role_names")
    if names is None:
        from pipeline.config import Settings

        names = Settings.from_env().role_names
    return names


def _now(name: str = "created_at") -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "moderators",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), server_default=sa.text("session_user"), nullable=False),
        _now(),
        _now("password_changed_at"),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_moderators"),
        sa.CheckConstraint(f"role IN {ROLES}", name="ck_moderators_role"),
        sa.CheckConstraint("name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]*$'", name="ck_moderators_name"),
        schema="catalogue",
    )
    op.execute("CREATE UNIQUE INDEX uq_moderators_name ON catalogue.moderators (lower(name))")
    op.create_table(
        "web_sessions",
        sa.Column("token_sha256", sa.Text(), nullable=False),
        sa.Column("moderator_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.Text(), nullable=False),
        _now(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256", name="pk_web_sessions"),
        sa.ForeignKeyConstraint(
            ["moderator_id"],
            ["catalogue.moderators.id"],
            name="fk_web_sessions_moderator_id_moderators",
            ondelete="CASCADE",
        ),
        schema="catalogue",
    )
    op.create_index(
        "ix_web_sessions_moderator_id", "web_sessions", ["moderator_id"], schema="catalogue"
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("client", sa.Text()),
        _now("failed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_login_failures"),
        schema="catalogue",
    )
    op.execute(
        "CREATE INDEX ix_login_failures_name_failed_at "
        "ON catalogue.login_failures (lower(name), failed_at)"
    )
    roles = _roles()
    op.execute(f"REVOKE ALL ON {TABLES} FROM {roles['reader']}, {roles['moderator']}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLES} TO {roles['app']}")


def downgrade() -> None:
    op.drop_table("login_failures", schema="catalogue")
    op.drop_table("web_sessions", schema="catalogue")
    op.drop_table("moderators", schema="catalogue")
