"""Assets that connect the catalogue's DAGs, importable from any DAG file without heavy imports.

`LABELS_CHANGED`: labels were changed by a relabel run, a label import, or `catalogue labels`
(through the REST API); the retrain DAG is scheduled on it. A relabel run emits it through
`LABELS_CHANGED_ALIAS` only when it wrote labels: a dry run, or a job that changes nothing, is a
successful run without an event.
`NEW_IMAGES` and `NEW_CHAMPION` schedule the predict DAG.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

LABELS_CHANGED = Asset("catalogue://labels")  # pipeline.labels.announce.LABELS_ASSET_URI
LABELS_CHANGED_ALIAS = AssetAlias("catalogue-labels-changed")

# A collection run stored new images (each collect task emits it); the predict DAG scores them.
NEW_IMAGES = Asset("catalogue://raw/images")

# A model was promoted to champion (by the retrain DAG's gate); the predict DAG rescores on it.
NEW_CHAMPION = Asset("catalogue://models/champion")
NEW_CHAMPION_ALIAS = AssetAlias("catalogue-new-champion")
