"""Retrain the colour and category models from the moderators' labels.

Weekly (Sunday 03:00 UTC), and whenever labels change (the `catalogue://labels` asset, emitted by
the `relabel` DAG and by `catalogue labels` commands). A run started by changed labels skips
training, saying why, when fewer than CATALOGUE_RETRAIN_MIN_CHANGED_LABELS labels changed since
the champions' snapshots; the weekly and manual runs always train.

1. `snapshot`: the current labels become a dataset snapshot (classes with enough examples, a
   train/validation/test split by a hash of each post's id; the manifest in the models bucket).
2. `train`: one network with a head per attribute (one artefact, a version per attribute), or
   with `separate` one task per attribute, on the `gpu` queue and pool (two trainings never share
   a GPU), measured on the snapshot's test split and registered as candidates. Only the `gpu`
   worker takes that queue, with its own Keras backend (compose: JAX; the local stack:
   CATALOGUE_GPU_QUEUE_BACKEND); `snapshot` and `promote` stay on queue `default`.
3. `promote`: a candidate becomes champion only when it beats the champion on the same test
   pictures by CATALOGUE_PROMOTION_MARGIN and no well-supported class loses more than
   CATALOGUE_PROMOTION_MAX_CLASS_DROP recall (where a paired test says the fall is not chance);
   otherwise it stays a candidate with the reason. A new champion is announced on
   `catalogue://models/champion` for the predict DAG.

Manual runs (Trigger DAG w/ config): `attributes`, `network` (default CATALOGUE_TRAIN_NETWORK),
`epochs`, `steps_per_epoch` (quick trials), `separate` (a network per attribute), `force` (train
even if few labels changed).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, Param, dag, task
from assets import LABELS_CHANGED, NEW_CHAMPION, NEW_CHAMPION_ALIAS
from schedules import from_next


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=from_next("0 3 * * 0"),  # a new installation waits for the next Sunday
        assets=LABELS_CHANGED,
    ),
    catchup=False,
    max_active_runs=1,
    tags=["catalogue", "train"],
    doc_md=__doc__,
    params={
        "attributes": Param(
            ["colour", "category"],
            type="array",
            items={"type": "string"},
            description="the attributes to retrain",
        ),
        "network": Param(
            None,
            type=["null", "string"],
            description="mobilenet_v2_050, mobilenet_v2_035, mobilenet_v2_100, catalogue_net, "
            "compact_80x60, colour_cnn11, category_cnn10 (default: CATALOGUE_TRAIN_NETWORK)",
        ),
        "epochs": Param(
            None, type=["null", "integer"], minimum=1, description="default: CATALOGUE_TRAIN_EPOCHS"
        ),
        "steps_per_epoch": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="cap the steps per epoch (quick trials)",
        ),
        "separate": Param(
            False, type="boolean", description="a network per attribute instead of one shared"
        ),
        "force": Param(False, type="boolean", description="train even if few labels changed"),
    },
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
)
def retrain_models():
    @task
    def snapshot(params=None, triggering_asset_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.storage import ObjectStore
        from pipeline.train.retrain import labels_changed_since_champions
        from pipeline.train.snapshot import SnapshotError, SnapshotOptions, snapshot_dataset

        settings = load_settings()
        engine = get_engine(settings.database_url)
        attributes = list(params["attributes"])
        changed = labels_changed_since_champions(engine=engine, attributes=attributes)
        by_labels = bool(triggering_asset_events)
        if by_labels and not params["force"] and changed < settings.retrain_min_changed_labels:
            raise AirflowSkipException(
                f"started by changed labels, but only {changed} labels changed since the "
                f"champions' snapshots (< CATALOGUE_RETRAIN_MIN_CHANGED_LABELS="
                f"{settings.retrain_min_changed_labels}); the weekly run will train"
            )
        try:
            made = snapshot_dataset(
                engine=engine,
                store=ObjectStore.for_models(settings),
                options=SnapshotOptions.from_settings(settings, attributes=tuple(attributes)),
            )
        except SnapshotError as exc:  # not enough labels yet: nothing to train, not a failure
            raise AirflowSkipException(f"no training this time: {exc}") from None
        return {"snapshot_id": made.id, "attributes": attributes, "labels_changed": changed}

    @task
    def groups_of(made: dict, params=None) -> list[list[str]]:
        """The attributes each training task learns: all in one network, or one each."""
        attributes = made["attributes"]
        return [[a] for a in attributes] if params.get("separate") else [attributes]

    @task(queue="gpu", pool="gpu")
    def train(attributes: list[str], made: dict, params=None) -> list[str]:
        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.train.fit import TrainOptions
        from pipeline.train.retrain import train_snapshot

        settings = load_settings()
        return train_snapshot(
            settings=settings,
            engine=get_engine(settings.database_url),
            snapshot_id=made["snapshot_id"],
            attributes=list(attributes),
            options=TrainOptions.from_settings(
                settings,
                architecture=params["network"] or None,
                epochs=params["epochs"] or None,
                steps_per_epoch=params["steps_per_epoch"],
            ),
            created_by="airflow",
        )

    @task(outlets=[NEW_CHAMPION_ALIAS])
    def promote(trained: list[list[str]], outlet_events=None) -> list[dict]:
        from pipeline.config import load_settings
        from pipeline.db import get_engine
        from pipeline.train.registry import GateOptions
        from pipeline.train.retrain import promote_versions

        settings = load_settings()
        decisions = promote_versions(
            settings=settings,
            engine=get_engine(settings.database_url),
            versions=[version for versions in trained for version in versions],
            gate=GateOptions.from_settings(settings),
            decided_by="airflow",
        )
        promoted = [d.version for d in decisions if d.promoted]
        if promoted:
            outlet_events[NEW_CHAMPION_ALIAS].add(NEW_CHAMPION, extra={"versions": promoted})
        return [{"version": d.version, "promoted": d.promoted, "reason": d.reason}
                for d in decisions]  # fmt: skip

    made = snapshot()
    promote(train.partial(made=made).expand(attributes=groups_of(made)))


retrain_models()
