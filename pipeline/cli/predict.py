"""`catalogue predict`: the champions score the images they have not scored yet."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand, shard
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings


def cmd_predict(args: argparse.Namespace) -> int:
    """Score the images the champions have not scored yet and write them to the marketplace."""
    from pipeline.db import get_engine
    from pipeline.predict.batch import PredictOptions
    from pipeline.predict.run import predict_as_configured

    index, shards = shard(args.shard)
    settings = load_settings()
    options = PredictOptions.from_settings(
        settings,
        attributes=tuple(args.attribute) if args.attribute else None,
        everything=args.all,
        shard=index,
        shards=shards,
        limit=args.limit,
        batch_size=args.batch_size or None,
        workers=args.workers or None,
    )
    run = predict_as_configured(
        settings=settings,
        engine=get_engine(settings.database_url),
        options=options,
        progress=lambda r: say(
            f"  {r.images:,}/{r.planned:,} images scored ({r.images_per_s:.0f}/s)"
        ),
    )
    champions = ", ".join(run.champions)
    if run.planned == 0:
        say(f"nothing to score: {champions} scored every image already (--all rescores)")
        _group_duplicates(settings)
        return EXIT_OK
    say(
        f"scored {run.images:,} images with {champions} in {run.seconds:.1f}s "
        f"({run.streaming_images_per_s:.0f}/s once the models were loaded): "
        f"{run.predictions:,} predictions, {run.needs_review:,} need review"
    )
    if run.undecodable or run.missing:
        say(
            f"  skipped {run.undecodable} undecodable and {run.missing} missing pictures "
            "(catalogue.unscorable_images has each reason), e.g.:"
        )
        for problem in run.problems[:5]:
            say(f"    {problem}")
    _group_duplicates(settings)
    return EXIT_OK


def _group_duplicates(settings) -> None:
    """The pass's new embeddings grouped with the rest (`catalogue duplicates`), when there is
    a category champion to embed pictures."""
    from pipeline.cli.duplicates import refresh
    from pipeline.db import get_engine
    from pipeline.predict.champions import current_champions
    from pipeline.predict.errors import NoChampion
    from pipeline.similar import EMBEDDING_ATTRIBUTE

    engine = get_engine(settings.database_url)
    try:
        current_champions(engine=engine, attributes=[EMBEDDING_ATTRIBUTE])
    except NoChampion:
        return
    refresh(engine, settings)


def add_commands(add: AddCommand) -> None:
    predict = add(
        "predict",
        cmd_predict,
        "Score the images the champion models have not scored yet (new images, or every image "
        "after a promotion) and write colour and category to marketplace.products; a moderator's "
        "label is never overwritten. Safe to rerun: an interrupted run finishes the rest.",
        tensorflow=True,
    )
    predict.add_argument(
        "--attribute", action="append", help="only this attribute (repeatable; default: all)"
    )
    predict.add_argument("--all", action="store_true", help="rescore images already scored")
    predict.add_argument("--limit", type=int, help="score at most this many images")
    predict.add_argument("--shard", metavar="I/N", help="only the images whose id %% N == I")
    predict.add_argument(
        "--batch-size", type=int, help="pictures per model call (CATALOGUE_PREDICT_BATCH_SIZE)"
    )
    predict.add_argument(
        "--workers", type=int, help="fetch and decode threads (CATALOGUE_PREDICT_WORKERS)"
    )
