"""What the catalogue holds: the report, and an analyst's SQL statement."""

from __future__ import annotations

import argparse

from pipeline.cli.args import AddCommand
from pipeline.cli.output import EXIT_OK, say
from pipeline.config import load_settings
from pipeline.terminal import printable


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine
    from pipeline.report import catalogue_report, report_lines

    settings = load_settings()
    for line in report_lines(catalogue_report(engine=get_engine(settings.database_url))):
        say(line)
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    """Run SQL against the catalogue and print the rows (analysts' quick look)."""
    from pipeline.db import get_engine
    from pipeline.report import statement_rows

    settings = load_settings()
    rows = statement_rows(engine=get_engine(settings.database_url), statement=args.query)
    for row in rows:  # the column names first; tab-separated, each cell escaped on its own
        print("\t".join("" if v is None else printable(v) for v in row), flush=True)
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    add(
        "report",
        cmd_report,
        "What the catalogue holds: counts, the labelled share, where each shown value comes "
        "from, pictures that need review, the champions' test metrics next to the seed "
        "baselines.",
    )
    sql = add("sql", cmd_sql, "Run one SQL statement against the catalogue and print the rows.")
    sql.add_argument("query")
