"""Collect posts of Instagram business accounts.

Nightly, every enabled account's new posts go into the object store and the `raw` schema: one
mapped task per account, on the `instagram` pool (one slot: never two accounts at once against
Instagram from one session), each retried with back-off on its own. A private, renamed, deleted or
personal account is recorded on its row and disabled; a blocked session (checkpoint) fails its
task with the reason. Each successful task announces new images to the predict DAG.

Manual runs (Trigger DAG w/ config): `accounts` (a subset), `max_posts`, `since` (YYYY-MM-DD),
or `archive_dir`: import folders written by instaloader instead of asking Instagram.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task
from assets import NEW_IMAGES
from schedules import from_next


@dag(
    # a run at once would hold the one active-run slot, its retries ten minutes apart, while the
    # operator's own first run waits queued
    schedule=from_next("0 2 * * *"),
    catchup=False,
    max_active_runs=1,
    tags=["catalogue", "collect"],
    doc_md=__doc__,
    params={
        "accounts": Param([], type="array", description="usernames; empty: every enabled account"),
        "max_posts": Param(
            None, type=["null", "integer"], minimum=1, description="new posts per account this run"
        ),
        "since": Param(
            None,
            type=["null", "string"],
            format="date",
            description="backfill no further back than this date",
        ),
        "archive_dir": Param(
            None,
            type=["null", "string"],
            description="import this instaloader archive folder instead",
        ),
    },
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": True,
    },
)
def collect_posts():
    @task
    def accounts_to_collect() -> list[str]:
        from pathlib import Path

        from pipeline.collect.archive_files import POST_FILE
        from pipeline.collect.instagram import enabled_accounts
        from pipeline.config import load_settings
        from pipeline.db import get_engine

        params = get_current_context()["params"]
        if params.get("archive_dir"):
            root = Path(params["archive_dir"])
            return sorted(
                folder.name
                for folder in root.iterdir()
                if folder.is_dir() and any(POST_FILE.match(p.name) for p in folder.iterdir())
            )
        engine = get_engine(load_settings().database_url)
        return enabled_accounts(engine, params.get("accounts") or None)

    @task(pool="instagram", outlets=[NEW_IMAGES], map_index_template="{{ account }}")
    def collect(account: str) -> dict:
        import json
        from datetime import UTC
        from datetime import datetime as dt
        from pathlib import Path

        from pipeline.collect.archive import import_archive
        from pipeline.collect.instagram import CollectOptions, collect_account, make_loader
        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.storage import ObjectStore

        params = get_current_context()["params"]
        settings = load_settings()
        engine = get_engine(settings.database_url)
        store = ObjectStore.for_images(settings)
        if params.get("archive_dir"):
            summary = import_archive(
                Path(params["archive_dir"]) / account, engine=engine, store=store, workers=4
            )
            return {
                "account": account,
                "status": "imported",
                "posts_new": summary.posts_new,
                "images_new": summary.images_new,
                "quarantined": summary.quarantined,
            }
        since = params.get("since")
        options = CollectOptions(
            max_posts=params.get("max_posts"),
            since=dt.fromisoformat(since).replace(tzinfo=UTC) if since else None,
        )
        # A logged-in session: the settings' session file, or the Airflow Variable
        # catalogue_instagram_session = {"username": ..., "cookies": {...}} (never in code).
        from airflow.sdk import Variable

        session = Variable.get("catalogue_instagram_session", default=None)
        session = json.loads(session) if session else {}
        loader = make_loader(
            engine=engine,
            session_file=settings.instagram_session_file,
            username=settings.instagram_username or session.get("username"),
            session_cookies=session.get("cookies"),
            sleep=settings.instagram_pauses,
        )
        run = collect_account(
            engine=engine, store=store, loader=loader, username=account, options=options
        )
        if run.status in ("blocked", "failing"):
            raise RuntimeError(f"{account}: {run.status}: {run.reason}")
        return {
            "account": account,
            "status": run.status,
            "posts_new": run.posts_new,
            "images_new": run.images_new,
            "quarantined": run.quarantined,
        }

    collect.expand(account=accounts_to_collect())


collect_posts()
