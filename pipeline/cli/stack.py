"""The services: the local stack (up, down, status), the schema (db), the buckets, a check."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipeline.cli.args import AddCommand, sub_commands
from pipeline.cli.output import EXIT_FAILED, EXIT_OK, say
from pipeline.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from infra.local_stack import ServiceStatus


def cmd_up(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    statuses = LocalStack(Settings.from_env(), progress=say).up(
        airflow=not args.no_airflow, executor=args.executor
    )
    print_status(statuses)
    return EXIT_OK if all(s.healthy for s in statuses if s.state != "stopped") else EXIT_FAILED


def cmd_down(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    stopped = LocalStack(Settings.from_env(), progress=say).down()
    say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from infra.local_stack import LocalStack

    statuses = LocalStack(Settings.from_env()).status()
    print_status(statuses)
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILED


def print_status(statuses: list[ServiceStatus]) -> None:
    names = max(9, *(len(s.name) for s in statuses))
    width = max(len(s.url) for s in statuses)
    for s in statuses:
        say(f"{s.name:<{names}} {s.state:<12} {s.url:<{width}}  {s.detail}")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine, migrate
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    # Both services must accept us before anything changes: nothing is half-written.
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        store.ensure_bucket(create=settings.s3_create_buckets)
    migrate.upgrade(engine, role_names=settings.role_names, revision=args.revision or "head")
    return _say_revision(settings, engine)


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine, migrate

    settings = load_settings()
    engine = get_engine(settings.database_url)
    if not args.revision:
        raise ConfigError(
            "REVISION",
            "downgrade needs a target revision",
            "Give one, e.g. `catalogue db downgrade base` (drops every catalogue table).",
        )
    migrate.downgrade(engine, role_names=settings.role_names, revision=args.revision)
    return _say_revision(settings, engine)


def cmd_db_current(args: argparse.Namespace) -> int:
    from pipeline.db import get_engine

    settings = load_settings()
    return _say_revision(settings, get_engine(settings.database_url))


def _say_revision(settings: Settings, engine: Engine) -> int:
    from pipeline.db import migrate

    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    say(f"database {settings.safe_database_url}: revision {current or 'none'} (head {head})")
    return EXIT_OK


def cmd_buckets(args: argparse.Namespace) -> int:
    """Create the image and model buckets unless they exist (docker compose's s3-init job)."""
    from pipeline.storage import ObjectStore

    settings = load_settings()
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        created = store.ensure_bucket(create=True)
        say(f"{store.endpoint}/{store.bucket}: {'created' if created else 'exists'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Prove every configured service answers with the configured credentials."""
    from pipeline.db import get_engine
    from pipeline.db.migrate import current_revision, head_revision
    from pipeline.storage import ObjectStore

    settings = load_settings()
    engine = get_engine(settings.database_url)
    current, head = current_revision(engine), head_revision()
    say(f"database  ok  {settings.safe_database_url} (revision {current or 'none'})")
    for store in (ObjectStore.for_images(settings), ObjectStore.for_models(settings)):
        store.check()
        say(f"s3        ok  {store.endpoint}/{store.bucket}")
    if current != head:
        say(
            f"the database is at revision {current or 'none'}, not {head}: run `catalogue db upgrade`"
        )
        return EXIT_FAILED
    return EXIT_OK


def add_commands(add: AddCommand) -> None:
    up = add(
        "up",
        cmd_up,
        "Start the local stack: Postgres (embedded unless CATALOGUE_DATABASE_URL is set), "
        "SeaweedFS's S3 server (unless CATALOGUE_S3_ENDPOINT is set), Airflow standalone (or "
        "with --executor celery its components and two Celery workers on Redis) and the "
        "moderators' workbench (`catalogue web`); "
        "migrate the catalogue and create the buckets. Safe to run again.",
    )
    up.add_argument(
        "--executor",
        choices=("local", "celery"),
        help="local: Airflow standalone (LocalExecutor); celery: the CeleryExecutor on "
        "CATALOGUE_REDIS_URL with a worker on the default queue and one on queue gpu "
        "(default: CATALOGUE_AIRFLOW_EXECUTOR, local)",
    )
    up.add_argument(
        "--no-airflow",
        action="store_true",
        help="start only Postgres and S3 (no Airflow, no workbench)",
    )
    add("down", cmd_down, "Stop what `catalogue up` started; configured services are left alone.")
    add("status", cmd_status, "Show each local service, its URL and whether it is healthy.")

    db = sub_commands(add("db", None, "Apply or revert schema migrations (Alembic)."))
    upgrade = db("upgrade", cmd_db_upgrade, "Migrate the schema up (default: to head).")
    upgrade.add_argument("revision", nargs="?", help="target revision (default: head)")
    downgrade = db("downgrade", cmd_db_downgrade, "Revert the schema to an earlier revision.")
    downgrade.add_argument(
        "revision", nargs="?", help="target revision (required), e.g. base or -1"
    )
    db("current", cmd_db_current, "Show the schema's revision and the newest one.")

    buckets = sub_commands(add("buckets", None, "Create the S3 buckets unless they exist."))
    buckets("create", cmd_buckets, "Create the S3 buckets unless they exist.")
    add("check", cmd_check, "Check that the database and the S3 buckets answer.")
