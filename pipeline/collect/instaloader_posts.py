"""instaloader's posts read as `CollectedPost`s: the fields its node holds, never a request more.

Live collection and archive import both get instaloader `Post`s; this reads each one's type,
caption, hashtags, counts, location and carousel children from the node instaloader already has.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from pipeline.collect.posts import CollectedImage, CollectedPost

MEDIA_TYPES = {"GraphImage": "image", "GraphSidecar": "sidecar", "GraphVideo": "video"}


def child_media_ids(node: dict[str, Any]) -> list[int]:
    """The carousel children's own media ids, in the order Instagram shows them.

    Where they are depends on how instaloader got the post: GraphQL nodes (archives) keep them in
    `edge_sidecar_to_children`, the anonymous web timeline in `carousel_media`, the logged-in
    timeline in `iphone_struct.carousel_media`.
    """
    edges = (node.get("edge_sidecar_to_children") or {}).get("edges") or []
    ids = [edge.get("node", {}).get("id") for edge in edges]
    if ids and all(ids):
        return [int(i) for i in ids]
    for media in (
        node.get("carousel_media"),
        (node.get("iphone_struct") or {}).get("carousel_media"),
    ):
        if media:
            return [int(str(item.get("pk") or item.get("id")).split("_")[0]) for item in media]
    return []


def _count(node: dict[str, Any], *paths: tuple[str, ...]) -> int | None:
    """A count the node already holds; None rather than a request to Instagram for it."""
    for path in paths:
        value: Any = node
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int):
            return value
    return None


def from_instaloader(post: Any, *, images: Sequence[CollectedImage], source: str) -> CollectedPost:
    """A `CollectedPost` from an instaloader `Post` (live or loaded from an archive file)."""
    return CollectedPost(
        shortcode=post.shortcode,
        media_id=post.mediaid,
        taken_at=post.date_utc.replace(tzinfo=UTC),
        media_type=MEDIA_TYPES.get(post.typename, "image"),
        caption=post.caption,
        hashtags=post.caption_hashtags,
        # instaloader's `likes`/`comments` ask Instagram when the node lacks the field (logged in,
        # every post would cost a request); read what the node holds.
        like_count=_count(
            post._node,
            ("edge_media_preview_like", "count"),
            ("edge_liked_by", "count"),
            ("like_count",),
        ),
        comment_count=_count(
            post._node,
            ("edge_media_to_comment", "count"),
            ("edge_media_to_parent_comment", "count"),
            ("comment_count",),
            ("comments",),
        ),
        # Post.location would ask Instagram when the node lacks it; store what the node holds.
        location=post._node.get("location"),
        node=post._node,
        images=images,
        source=source,
    )
