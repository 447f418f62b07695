"""Tell Airflow about a change made outside it, as an event on one of the catalogue's assets.

A `catalogue` command that changes labels or the champion models creates the event the matching
DAG task would have emitted (through Airflow 3's public REST API), so the DAGs scheduled on the
asset run. Nothing depends on this reaching Airflow, so every problem (Airflow down, login
refused, no DAG using the asset parsed yet) ends in a one-line message, never an exception.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings

TIMEOUT = (2, 10)  # seconds to connect, to read


def announce_asset_event(
    *, settings: Settings, uri: str, extra: dict[str, Any], done: str, fallback: str
) -> str:
    """Create an asset event for `uri`; return what happened, in one line (`done` on success,
    `fallback` says what happens anyway when Airflow cannot be told)."""
    import requests

    url = (settings.airflow_url or f"http://127.0.0.1:{settings.airflow_port}").rstrip("/")
    try:
        login = requests.post(
            f"{url}/auth/token",
            json={
                "username": settings.airflow_username,
                "password": settings.airflow_password or "",
            },
            timeout=TIMEOUT,
        )
        if login.status_code in (401, 403) or (
            login.status_code == 400 and not settings.airflow_password
        ):
            return (
                f"Airflow at {url} refused the login of '{settings.airflow_username}': set "
                f"CATALOGUE_AIRFLOW_USERNAME and CATALOGUE_AIRFLOW_PASSWORD; {fallback}"
            )
        login.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

        found = session.get(f"{url}/api/v2/assets", params={"uri_pattern": uri}, timeout=TIMEOUT)
        found.raise_for_status()
        # Airflow stores the URI normalised (catalogue://labels/)
        asset_ids = [a["id"] for a in found.json()["assets"] if a["uri"].rstrip("/") == uri]
        if not asset_ids:
            return (
                f"Airflow at {url} does not know the asset {uri} yet (no DAG that uses it has "
                f"been parsed); {fallback}"
            )
        created = session.post(
            f"{url}/api/v2/assets/events",
            json={"asset_id": asset_ids[0], "extra": extra},
            timeout=TIMEOUT,
        )
        created.raise_for_status()
        event_id = created.json().get("id")
    except requests.ConnectionError:
        return f"Airflow at {url} is not reachable; {fallback}"
    except requests.Timeout:
        return f"Airflow at {url} did not answer in time; {fallback}"
    except requests.HTTPError as exc:
        response = exc.response
        return (
            f"Airflow at {url} answered {response.status_code} to {response.request.method} "
            f"{response.request.path_url.split('?')[0]}; {fallback}"
        )
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        return f"Airflow at {url} gave an unexpected answer ({exc.__class__.__name__}); {fallback}"
    return f"told Airflow at {url}: {done} (asset event {event_id} on {uri})"
