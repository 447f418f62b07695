"""The SQL that writes a collected post and its images (`write_post` runs it).

A post known to be new is inserted by one statement (`insert_statement`); otherwise the checked
upsert (`upsert_statement`) runs after the post's row and slides are locked and its slides placed
where the newest listing has them (`SET_MOVING_SLIDES_ASIDE`, then `PUT_SLIDES_IN_PLACE`).
Statements are built once per number of images and cached.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

ASIDE = 16384  # a moving slide's position while slides move (above every MAX_SLIDES position)

LOOKUP = text(
    """
    SELECT ARRAY(SELECT DISTINCT sha256 FROM raw.images WHERE sha256 = ANY(:shas)) AS known,
           EXISTS (SELECT 1 FROM raw.posts WHERE media_id = :media_id) AS post_exists
    """
)

# The post's row, locked for this write: slides of two listings of one post never interleave.
LOCK_POST = text("SELECT id, listed_at FROM raw.posts WHERE media_id = :media_id FOR UPDATE")
LOCK_SLIDES = text(
    "SELECT catalogue.lock_images(ARRAY(SELECT id FROM raw.images WHERE post_id = :post_id))"
)
OTHER_POST_WITH_SHORTCODE = text(
    "SELECT media_id FROM raw.posts WHERE shortcode = :shortcode AND media_id <> :media_id"
)
PICTURES_OF_OTHER_POSTS = text(
    """
    SELECT i.media_id, p.shortcode FROM raw.images i JOIN raw.posts p ON p.id = i.post_id
    WHERE i.media_id = ANY(:media_ids) AND p.media_id <> :media_id
    """
)
REMOVE_MISSING_SLIDES = text(
    """
    UPDATE raw.images SET removed_at = now()
    WHERE post_id = :post_id AND removed_at IS NULL AND NOT (media_id = ANY(:media_ids))
    """
)
# Slides that move are set aside first, then put in place: the unique (post_id, position) index
# of live slides is checked row by row, so a swap written in one step collides with itself.
SET_MOVING_SLIDES_ASIDE = text(
    f"""
    UPDATE raw.images i SET position = {ASIDE} + v.position
    FROM unnest(CAST(:media_ids AS bigint[]), CAST(:positions AS int[])) AS v(media_id, position)
    WHERE i.post_id = :post_id AND i.media_id = v.media_id AND i.removed_at IS NULL
      AND i.position <> v.position
    """
)
PUT_SLIDES_IN_PLACE = text(
    f"""
    UPDATE raw.images SET position = position - {ASIDE}
    WHERE post_id = :post_id AND removed_at IS NULL AND position >= {ASIDE}
    """
)
SEEN_LISTING = text("UPDATE raw.posts SET listed_at = :listed_at WHERE id = :post_id")


_POST_COLUMNS = """
    INSERT INTO raw.posts (shortcode, media_id, account_id, taken_at, caption, hashtags,
                           like_count, comment_count, media_type, location, node, source,
                           listed_at, cleaned)
    VALUES (:shortcode, :media_id, :account_id, :taken_at, :caption, :hashtags,
            :like_count, :comment_count, :media_type, :location, :node, :source,
            :listed_at, :cleaned)
"""
# A slide first seen in a listing older than the stored one is not on the post now: removed.
_IMAGE_COLUMNS = """
    INSERT INTO raw.images (media_id, post_id, position, is_video_cover, object_key,
                            sha256, width, height, bytes, content_type, removed_at)
    SELECT v.media_id, post.id, v.position, v.is_video_cover, v.object_key, v.sha256,
           v.width, v.height, v.bytes, v.content_type,
           CASE WHEN CAST(:older AS boolean) THEN now() END
    FROM post, (VALUES {values}) AS v(media_id, position, is_video_cover, object_key,
                                      sha256, width, height, bytes, content_type)
"""


def _image_values(image_count: int) -> str:
    return ",\n".join(
        f"(:media_id_{i}, :position_{i}, :is_video_cover_{i}, :object_key_{i}, :sha256_{i}, "
        f":width_{i}, :height_{i}, :bytes_{i}, :content_type_{i})"
        for i in range(image_count)
    )


def _with_json(statement: TextClause) -> TextClause:
    return statement.bindparams(bindparam("location", type_=JSONB), bindparam("node", type_=JSONB))


@lru_cache(maxsize=32)
def insert_statement(image_count: int) -> TextClause:
    """A new post and its images, inserted only: no row for the post returned when it exists.

    Cheaper for Postgres than the upsert (a simpler plan, and no UPDATE trigger: `INSERT ... ON
    CONFLICT DO UPDATE` fires the tables' statement-level UPDATE triggers even when nothing
    conflicts). For posts the caller found new; `write_post` falls back to the checked upsert
    when the post turns out to be there after all, its shortcode is taken, or a picture id is
    stored under another post (the picture stays there; the upsert quarantines the slide).
    """
    images = (
        f""", new_images AS ({_IMAGE_COLUMNS.format(values=_image_values(image_count))}
            ON CONFLICT (media_id) DO NOTHING
            RETURNING 1
        )"""
        if image_count
        else ""
    )
    inserted_images = "(SELECT count(*) FROM new_images)" if image_count else "0"
    return _with_json(
        text(
            f"""
            WITH post AS ({_POST_COLUMNS}
                ON CONFLICT DO NOTHING
                RETURNING id
            ){images}
            SELECT id, {inserted_images} AS images_inserted FROM post
            """
        )
    )


@lru_cache(maxsize=32)
def upsert_statement(image_count: int) -> TextClause:
    """The post and its images in one statement (one round trip per post).

    A post whose fields did not change is not rewritten (`refreshed_at` keeps its value); its id
    then comes from the second branch of `post`. A listing older than the stored one (`older`)
    changes no field and moves no slide. A picture id of another post is left there.
    """
    images = (
        f"""
        , new_images AS ({_IMAGE_COLUMNS.format(values=_image_values(image_count))}
            ON CONFLICT (media_id) DO UPDATE SET
                position = EXCLUDED.position, removed_at = NULL
            WHERE raw.images.post_id = EXCLUDED.post_id AND NOT CAST(:older AS boolean)
              AND (raw.images.position, raw.images.removed_at IS NULL)
                  IS DISTINCT FROM (EXCLUDED.position, true)
            RETURNING (xmax = 0) AS inserted
        )"""
        if image_count
        else ""
    )
    inserted_images = "(SELECT count(*) FROM new_images WHERE inserted)" if image_count else "0"
    statement = text(
        f"""
        WITH changed AS ({_POST_COLUMNS}
            ON CONFLICT (media_id) DO UPDATE SET
                caption = EXCLUDED.caption, hashtags = EXCLUDED.hashtags,
                like_count = EXCLUDED.like_count, comment_count = EXCLUDED.comment_count,
                location = EXCLUDED.location, node = EXCLUDED.node, cleaned = EXCLUDED.cleaned,
                refreshed_at = now(), unavailable_since = NULL
            WHERE NOT CAST(:older AS boolean)
              AND (raw.posts.caption, raw.posts.hashtags, raw.posts.like_count,
                   raw.posts.comment_count, raw.posts.location, raw.posts.node,
                   raw.posts.unavailable_since IS NULL)
                  IS DISTINCT FROM
                  (EXCLUDED.caption, EXCLUDED.hashtags, EXCLUDED.like_count,
                   EXCLUDED.comment_count, EXCLUDED.location, EXCLUDED.node, true)
            RETURNING id, (xmax = 0) AS inserted, true AS updated
        ), post AS (
            SELECT id, inserted, updated FROM changed
            UNION ALL
            SELECT id, false, false FROM raw.posts
            WHERE media_id = :media_id AND NOT EXISTS (SELECT 1 FROM changed)
        ){images}
        SELECT id, inserted, updated AND NOT inserted AS updated,
               {inserted_images} AS images_inserted
        FROM post
        """
    )
    return _with_json(statement)
