"""`catalogue`: the command line for people who do not use the Airflow UI.

One module per command group (`stack`, `accounts`, `collect`, `labels`, `train`, `models`,
`predict`, `similar`, `duplicates`, `demo`, `report`, `web`, `users`), each adding its commands to the parser; `args` says once what an
argument means. Every error a user can cause ends in one line naming the setting or input to fix,
and a non-zero exit code; never a bare traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pipeline.cli import (
    accounts,
    collect,
    demo,
    duplicates,
    labels,
    models,
    predict,
    report,
    similar,
    stack,
    train,
    users,
    web,
)
from pipeline.cli.args import UsageError, sub_commands
from pipeline.cli.output import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, complain
from pipeline.config import ConfigError
from pipeline.errors import CatalogueError
from pipeline.terminal import PrintableFormatter

__all__ = ["UsageError", "build_parser", "main"]

log = logging.getLogger("catalogue")
GROUPS = (
    stack, accounts, collect, labels, train, models, predict, similar, duplicates, demo, report,
    web, users,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catalogue",
        description=(
            "Collect Instagram business accounts' posts into a fashion catalogue labelled by "
            "colour and category. Configuration comes from CATALOGUE_* environment variables "
            "(see .env.example); without CATALOGUE_DATABASE_URL / CATALOGUE_S3_ENDPOINT the "
            "local stack (`catalogue up`) provides Postgres and S3."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    add = sub_commands(parser, dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler]
    )
    if not args.verbose:  # retries are reported once, in the final error, not per attempt
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        if getattr(args, "starts_tensorflow", False):
            from pipeline.train.quiet_start import start_quietly

            start_quietly()  # TensorFlow's C++ start-up notices read as errors to a newcomer
        return args.handler(args)
    except ConfigError as exc:
        complain(f"configuration error: {exc}")
        return EXIT_CONFIG
    except CatalogueError as exc:  # a user's mistake or a service down, said in one line
        complain(exc)
        return EXIT_FAILED
    except (FileNotFoundError, FileExistsError) as exc:
        complain(exc)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # a TrainingInterrupted says what was kept
        from pipeline.train.errors import TrainingInterrupted

        complain(str(exc) or "interrupted")
        if isinstance(exc, TrainingInterrupted):
            # Keras's batch threads and TensorFlow's generator threads are still running: tearing
            # the interpreter down under them can crash (a segfault instead of exit code 130),
            # and nothing is left to save
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:  # `catalogue accounts list | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a fault of ours: one escaped line; the traceback with --verbose
        log.debug("unexpected error", exc_info=True)
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        complain(
            f"unexpected error ({type(exc).__name__}): {first_line}. "
            "Run it again with --verbose for the traceback, and report it"
        )
        return EXIT_FAILED
