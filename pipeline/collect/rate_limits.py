"""instaloader's RateController, with its request history kept in Postgres.

Airflow runs each account's collection in a new process; instaloader's controller would start each
one with empty sliding windows and let a night's tasks together exceed what Instagram tolerates
(about 200 GraphQL requests per 11 minutes per session). This controller loads the last hour of
requests of its session from `raw.instagram_requests` and records every request it lets through.

The clock and the sleep are injectable, so tests run instaloader's real waiting logic on a virtual
clock in seconds while production keeps instaloader's waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from instaloader import InstaloaderContext, RateController
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

HISTORY = timedelta(hours=1)  # instaloader's longest sliding window is 30 minutes


class PersistentRateController(RateController):
    def __init__(
        self,
        context: InstaloaderContext,
        *,
        engine: Engine,
        session: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(context)
        self._engine = engine
        self._session = session
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self.slept: list[float] = []
        self._load_history()

    def sleep(self, secs: float) -> None:
        self.slept.append(secs)
        log.info("rate limit: waiting %.0f s before the next Instagram request", secs)
        self._sleep(secs)

    def wait_before_query(self, query_type: str) -> None:
        # instaloader's own logic, on the injected clock, plus one row per request let through.
        waittime = self.query_waittime(query_type, self._clock(), False)
        if waittime > 0:
            self.sleep(waittime)
        self._query_timestamps.setdefault(query_type, []).append(self._clock())
        self._record(query_type)

    def handle_429(self, query_type: str) -> None:
        waittime = self.query_waittime(query_type, self._clock(), True)
        log.warning(
            "Instagram answered 429 Too Many Requests (%s); retrying in %.0f s",
            query_type,
            waittime,
        )
        if waittime > 0:
            self.sleep(waittime)

    def _load_history(self) -> None:
        now_wall, now_clock = self._wall(), self._clock()
        with self._engine.begin() as connection:
            connection.execute(
                text("DELETE FROM raw.instagram_requests WHERE requested_at < :oldest"),
                {"oldest": now_wall - HISTORY},
            )
            rows = connection.execute(
                text(
                    "SELECT query_type, requested_at FROM raw.instagram_requests "
                    "WHERE session = :session ORDER BY requested_at"
                ),
                {"session": self._session},
            ).all()
        for query_type, requested_at in rows:
            age = (now_wall - requested_at).total_seconds()
            self._query_timestamps.setdefault(query_type, []).append(now_clock - age)

    def _record(self, query_type: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO raw.instagram_requests (session, query_type, requested_at) "
                    "VALUES (:session, :query_type, :at)"
                ),
                {"session": self._session, "query_type": query_type, "at": self._wall()},
            )
