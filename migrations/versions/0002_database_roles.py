"""Group roles: the application, analysts' read-only `*_reader`, and `*_moderator`.

Role names come from CATALOGUE_ROLE_PREFIX (default `catalogue`): `catalogue_app`,
`catalogue_reader`, `catalogue_moderator`. They are NOLOGIN group roles; operators grant them to
login roles (`GRANT catalogue_reader TO alice`). Default privileges extend the grants to tables that
later migrations create. Roles are cluster-wide: upgrading a second database reuses them, and a
downgrade drops a role only when no other database still depends on it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALL_SCHEMAS = ("raw", "catalogue", "marketplace")
READER_SCHEMAS = ("catalogue", "marketplace")


def _roles() -> dict[str, str]:
    names = context.config.attributes.get("role_names")
    if names is None:
        from pipeline.config import Settings

        names = Settings.from_env().role_names
    return names


def upgrade() -> None:
    roles = _roles()
    for role in roles.values():
        op.execute(
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object THEN NULL;
            END $$
            """
        )
    app, reader, moderator = roles["app"], roles["reader"], roles["moderator"]

    for schema in ALL_SCHEMAS:
        op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {app}, {moderator}")
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {app}"
        )
        op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {app}")
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}"
        )
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {app}"
        )
        # Moderators read what they label; writing labels is granted by the labels migration.
        op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {moderator}")
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {moderator}"
        )

    for schema in READER_SCHEMAS:
        op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {reader}")
        op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}")
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {reader}"
        )


def downgrade() -> None:
    roles = _roles()
    for schema in ALL_SCHEMAS:
        for role in roles.values():
            op.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {role}"
            )
            op.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON SEQUENCES FROM {role}"
            )
            op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}")
            op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}")
            op.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
    for role in roles.values():
        # Another database of the cluster may still use the role: then it stays.
        op.execute(
            f"""
            DO $$ BEGIN
                DROP ROLE IF EXISTS {role};
            EXCEPTION WHEN dependent_objects_still_exist THEN
                RAISE NOTICE 'role {role} is still used elsewhere in the cluster; kept';
            END $$
            """
        )
