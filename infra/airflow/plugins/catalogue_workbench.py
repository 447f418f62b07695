"""A link from Airflow's UI to the moderators' workbench (`catalogue web`): an external view in
the Browse menu. The workbench refuses to be framed, so the link opens it in its own page."""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin


def workbench_url() -> str:
    host = os.environ.get("CATALOGUE_WEB_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # listening everywhere: the browser reaches it locally
        host = "localhost"
    port = os.environ.get("CATALOGUE_WEB_PORT") or "8090"
    return f"http://{host}:{port}/review"


class CatalogueWorkbench(AirflowPlugin):
    name = "catalogue_workbench"
    external_views = [
        {
            "name": "Moderators' workbench",
            "href": workbench_url(),
            "category": "browse",
            "destination": "nav",
        }
    ]
