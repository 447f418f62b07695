"""The quarantine: inputs that collection and archive import refused, each with its reason.

One row per refused input (`raw.quarantine`, keyed by source and input reference): a post, a
picture, an archive folder or file. Nothing refused is lost: the row says what it was and why, and
seeing it again counts the attempt instead of adding a row.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from pipeline.db.postgres_text import for_postgres


def quarantine(
    *,
    connection: Connection,
    source: str,
    input_ref: str,
    reason: str,
    account: str | None = None,
    shortcode: str | None = None,
    position: int | None = None,
    detail: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
) -> None:
    """Record a refused input; seeing it again updates the same row and counts the attempt."""
    input_ref, shortcode, reason, detail = (
        for_postgres(value)[0] for value in (input_ref, shortcode, reason, detail)
    )
    connection.execute(
        text(
            """
            INSERT INTO raw.quarantine (source, input_ref, account, shortcode, position, reason,
                                        detail, sha256, bytes)
            VALUES (:source, :input_ref, :account, :shortcode, :position, :reason, :detail,
                    :sha256, :bytes)
            ON CONFLICT (source, input_ref) DO UPDATE SET
                reason = EXCLUDED.reason, detail = EXCLUDED.detail,
                attempts = raw.quarantine.attempts + 1, last_seen_at = now()
            """
        ),
        {
            "source": source,
            "input_ref": input_ref,
            "account": account,
            "shortcode": shortcode,
            "position": position,
            "reason": reason,
            "detail": detail,
            "sha256": sha256,
            "bytes": size,
        },
    )
