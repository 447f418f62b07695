"""`catalogue`: the command line for people who do not use the Airflow UI.

Every error a user can cause ends in one line naming the setting or input to fix, and a non-zero
exit code; never a bare traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pipeline.config import ConfigError, Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("catalogue")


def _say(message: str) -> None:
    print(message, flush=True)


# -- local stack ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    statuses = LocalStack(Settings.from_env(), progress=_say).up(airflow=not args.no_airflow)
    _print_status(statuses)
    return EXIT_OK if all(s.healthy for s in statuses if s.state != "stopped") else EXIT_FAILED


def cmd_down(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    stopped = LocalStack(Settings.from_env(), progress=_say).down()
    _say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    statuses = LocalStack(Settings.from_env()).status()
    _print_status(statuses)
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILED


def _print_status(statuses) -> None:
    width = max(len(s.url) for s in statuses)
    for s in statuses:
        _say(f"{s.name:<9} {s.state:<12} {s.url:<{width}}  {s.detail}")


# -- database -------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine, migrate
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if args.action == "upgrade":
        # Both services must accept us before anything changes: nothing is half-written.
        for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
            store.ensure_bucket(create=settings.s3_create_buckets)
        migrate.upgrade(engine, role_names=settings.role_names, revision=args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise ConfigError(
                "REVISION",
                "downgrade needs a target revision",
                "Give one, e.g. `catalogue db downgrade base` (drops every catalogue table).",
            )
        migrate.downgrade(engine, role_names=settings.role_names, revision=args.revision)
    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    _say(f"database {settings.safe_database_url}: revision {current or 'none'} (head {head})")
    return EXIT_OK


def cmd_buckets(args: argparse.Namespace) -> int:
    """Create the image and model buckets unless they exist (docker compose's s3-init job)."""
    from pipeline.storage import ObjectStore

    settings = load_settings()
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        created = store.ensure_bucket(create=True)
        _say(f"{store.endpoint}/{store.bucket}: {'created' if created else 'exists'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Prove every configured service answers with the configured credentials."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import current_revision, head_revision
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    current, head = current_revision(engine), head_revision()
    _say(f"database  ok  {settings.safe_database_url} (revision {current or 'none'})")
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        store.check()
        _say(f"s3        ok  {store.endpoint}/{store.bucket}")
    if current != head:
        _say(
            f"the database is at revision {current or 'none'}, not {head}: run `catalogue db upgrade`"
        )
        return EXIT_FAILED
    return EXIT_OK


# -- the demo ---------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Bring the stack up and show that every part answers (later stages join as they land)."""
    from infra.local_stack import LocalStack

    settings = Settings.from_env()
    _say("== starting the local stack (Postgres, S3, Airflow)")
    statuses = LocalStack(settings, progress=_say).up(airflow=not args.no_airflow)
    _print_status(statuses)
    _say("== checking the catalogue")
    code = cmd_check(args)
    airflow = next(s for s in statuses if s.name == "airflow")
    _say("")
    _say("next:")
    if airflow.healthy:
        _say(f"  Airflow UI   {airflow.url}  ({airflow.detail})")
    _say("  SQL          catalogue sql  -- or psql with the URL above; try")
    _say("               SELECT account, colour, category FROM marketplace.products LIMIT 10;")
    _say("  stop         catalogue down")
    return code


def cmd_sql(args: argparse.Namespace) -> int:
    """Run SQL against the catalogue and print the rows (analysts' quick look)."""
    from sqlalchemy import text

    from pipeline.db import get_engine

    settings = load_settings()
    with get_engine(settings.database_url).connect() as connection:
        result = connection.execute(text(args.query))
        if result.returns_rows:
            _say("\t".join(result.keys()))
            for row in result:
                _say("\t".join("" if v is None else str(v) for v in row))
    return EXIT_OK


# -- wiring ---------------------------------------------------------------------------------------
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    up = add(
        "up",
        cmd_up,
        "Start the local stack: Postgres (embedded unless CATALOGUE_DATABASE_URL is set), "
        "SeaweedFS's S3 server (unless CATALOGUE_S3_ENDPOINT is set) and Airflow standalone; "
        "migrate the catalogue and create the buckets. Safe to run again.",
    )
    up.add_argument("--no-airflow", action="store_true", help="start only Postgres and S3")
    add("down", cmd_down, "Stop what `catalogue up` started; configured services are left alone.")
    add("status", cmd_status, "Show each local service, its URL and whether it is healthy.")

    db = add("db", cmd_db, "Apply or revert schema migrations (Alembic).")
    db.add_argument("action", choices=("upgrade", "downgrade", "current"))
    db.add_argument(
        "revision",
        nargs="?",
        help="target revision (upgrade: default head; downgrade: required, e.g. base or -1)",
    )
    buckets = add("buckets", cmd_buckets, "Create the S3 buckets unless they exist.")
    buckets.add_argument("action", choices=("create",))
    add("check", cmd_check, "Check that the database and the S3 buckets answer.")
    demo = add(
        "demo",
        cmd_demo,
        "Run the product end to end on embedded defaults (today: start the stack, migrate, check).",
    )
    demo.add_argument("--no-airflow", action="store_true", help="skip Airflow")
    sql = add("sql", cmd_sql, "Run one SQL statement against the catalogue and print the rows.")
    sql.add_argument("query")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # retries are reported once, in the final error, not per attempt
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    from infra.local_stack import StackError
    from pipeline.db import DatabaseError
    from pipeline.storage import ObjectStoreError

    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"catalogue: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (DatabaseError, ObjectStoreError, StackError) as exc:
        print(f"catalogue: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("catalogue: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
