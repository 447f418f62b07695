"""Tell Airflow that labels changed outside it (the `catalogue labels` commands).

An asset event on `catalogue://labels` through Airflow 3's public REST API is what a relabel run
inside Airflow emits by itself; the retrain DAG listens to it. Nothing depends on this reaching
Airflow: the retrain DAG also counts changed labels in the database. So every problem (Airflow
down, login refused, no DAG using the asset parsed yet) ends in a one-line message, never an
exception.
"""

from __future__ import annotations

from pipeline.config import Settings

LABELS_ASSET_URI = "catalogue://labels"
TIMEOUT = (2, 10)  # seconds to connect, to read
_FALLBACK = "the retrain DAG counts changed labels in the database anyway"


def announce_labels_changed(*, settings: Settings, job_id: int, labels_written: int) -> str:
    """Create an asset event for `catalogue://labels`; return what happened, in one line."""
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
                f"CATALOGUE_AIRFLOW_USERNAME and CATALOGUE_AIRFLOW_PASSWORD; {_FALLBACK}"
            )
        login.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

        found = session.get(
            f"{url}/api/v2/assets", params={"uri_pattern": LABELS_ASSET_URI}, timeout=TIMEOUT
        )
        found.raise_for_status()
        # Airflow stores the URI normalised (catalogue://labels/)
        asset_ids = [
            a["id"] for a in found.json()["assets"] if a["uri"].rstrip("/") == LABELS_ASSET_URI
        ]
        if not asset_ids:
            return (
                f"Airflow at {url} does not know the asset {LABELS_ASSET_URI} yet (no DAG that "
                f"uses it has been parsed); {_FALLBACK}"
            )
        created = session.post(
            f"{url}/api/v2/assets/events",
            json={
                "asset_id": asset_ids[0],
                "extra": {"job_id": job_id, "labels_written": labels_written},
            },
            timeout=TIMEOUT,
        )
        created.raise_for_status()
        event_id = created.json().get("id")
    except requests.ConnectionError:
        return f"Airflow at {url} is not reachable; {_FALLBACK}"
    except requests.Timeout:
        return f"Airflow at {url} did not answer in time; {_FALLBACK}"
    except requests.HTTPError as exc:
        response = exc.response
        return (
            f"Airflow at {url} answered {response.status_code} to {response.request.method} "
            f"{response.request.path_url.split('?')[0]}; {_FALLBACK}"
        )
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        return f"Airflow at {url} gave an unexpected answer ({exc.__class__.__name__}); {_FALLBACK}"
    return (
        f"told Airflow at {url}: {labels_written} labels changed by job {job_id} "
        f"(asset event {event_id} on {LABELS_ASSET_URI})"
    )
