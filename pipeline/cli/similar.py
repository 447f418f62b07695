"""`catalogue similar`: the products nearest to a catalogued picture or to a photo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.args import AddCommand, UsageError
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings


def cmd_similar(args: argparse.Namespace) -> int:
    """The nearest products to a catalogued picture (SHORTCODE[/POSITION]) or to --image FILE."""
    from pipeline.db import get_engine
    from pipeline.similar.search import (
        catalogued_query,
        embedding_version,
        nearest,
        photo_query,
    )

    if (args.picture is None) == (args.image is None):
        raise UsageError("name a catalogued picture (SHORTCODE[/POSITION]) or --image FILE")
    settings = load_settings()
    engine = get_engine(settings.database_url)
    version = embedding_version(engine)
    if args.image is not None:
        query = photo_query(engine, settings=settings, path=args.image)
    else:
        query = catalogued_query(engine, version, args.picture)
    found = nearest(
        engine, version, query, limit=args.limit, same_category=args.same_category,
        account=args.account,
    )  # fmt: skip
    if args.json:
        print(json.dumps([n.__dict__ for n in found], ensure_ascii=True))
        return EXIT_OK
    scope = []
    if args.same_category:
        scope.append(f"category {query.category}")
    if args.account:
        scope.append(f"@{args.account}")
    say(
        f"nearest to {query.description} by {version.version}'s embeddings"
        + (f" ({', '.join(scope)})" if scope else "")
        + f": {len(found)} product(s), cosine distance first"
    )
    for n in found:
        group = f"  duplicate group {n.duplicate_group}" if n.duplicate_group else ""
        say(
            f"  {n.distance:6.3f}  {n.shortcode}/{n.position}  @{n.account}  "
            f"{n.category or '-'}  {n.colour or '-'}{group}"
        )
    if not found:
        say("  none: no other product is embedded yet" if not scope else "  none in that scope")
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    similar = add(
        "similar",
        cmd_similar,
        "The products that look most like a catalogued picture (SHORTCODE, or SHORTCODE/POSITION "
        "for a carousel's slide, from 0) "
        "or like a photo (--image FILE: a shopper's photo, a supplier's page; checked like any "
        "imported picture), by the category champion's embeddings (written by `catalogue "
        "predict`). Analysts call the SQL function marketplace.similar_products(shortcode, "
        "position, k) (docs/similar.md).",
        tensorflow=True,
    )
    similar.add_argument("picture", nargs="?", metavar="SHORTCODE[/POSITION]")
    similar.add_argument("--image", type=Path, metavar="FILE", help="search by this photo")
    similar.add_argument(
        "--limit", type=int, default=10, help="products to show (default 10, at most 1000)"
    )
    similar.add_argument(
        "--same-category", action="store_true", help="only products of the picture's category"
    )
    similar.add_argument("--account", metavar="USERNAME", help="only this account's products")
    similar.add_argument("--json", action="store_true", help="one JSON array, for scripts")
