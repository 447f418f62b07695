"""Retraining end to end: snapshot the labels, train, register, promote when better.

The steps are separate functions so Airflow runs them as separate tasks (training on the `gpu`
queue), and `retrain` chains them for the command line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from pipeline.artefacts import artefact_cache
from pipeline.config import Settings
from pipeline.storage import ObjectStore
from pipeline.train import registry
from pipeline.train.fit import TrainOptions, train
from pipeline.train.inputs import PictureCache
from pipeline.train.snapshot import Snapshot, SnapshotOptions, load_snapshot, snapshot_dataset


@dataclass
class RetrainOutcome:
    snapshot: Snapshot
    versions: list[str] = field(default_factory=list)
    decisions: list[registry.Decision] = field(default_factory=list)
    seconds: float = 0.0


def picture_cache(settings: Settings) -> PictureCache:
    return PictureCache(ObjectStore.for_images(settings), settings.state_dir / "cache" / "pictures")


def labels_changed_since_champions(*, engine: Engine, attributes: list[str]) -> int:
    """Labels of these attributes written after the newest label the champions were trained on
    (every label of an attribute that has no champion yet)."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                """
                SELECT count(*) FROM catalogue.labels l
                LEFT JOIN catalogue.model_versions v
                       ON v.attribute = l.attribute AND v.status = 'champion'
                LEFT JOIN catalogue.dataset_snapshots s ON s.id = v.snapshot_id
                WHERE l.attribute = ANY(:attributes) AND l.id > COALESCE(s.labels_up_to, 0)
                """
            ),
            {"attributes": attributes},
        ).scalar_one()


def train_snapshot(
    *, settings: Settings, engine: Engine, snapshot_id: int, attributes: list[str],
    options: TrainOptions, created_by: str | None = None, progress=None,
) -> list[str]:  # fmt: skip
    """Train one network for `attributes` on a recorded snapshot and register it."""
    models = ObjectStore.for_models(settings)
    snapshot = load_snapshot(engine=engine, store=models, snapshot_id=snapshot_id)
    folder = registry.scratch_folder()
    try:
        trained = train(
            manifest=snapshot.manifest, cache=picture_cache(settings), attributes=attributes,
            options=options, out=folder, progress=progress,
        )  # fmt: skip
        write_cards(trained.folder, snapshot.manifest)
        return registry.register(
            engine=engine, store=models, trained=trained, snapshot_id=snapshot.id,
            created_by=created_by, params={"architecture": options.architecture,
                                           "batch_size": options.batch_size, "seed": options.seed},
        )  # fmt: skip
    finally:
        registry.remove_folder(folder)


def write_cards(folder: Path, manifest: dict[str, Any]) -> None:
    """A model card and a confusion matrix picture per attribute, beside the artefact."""
    from pipeline.train.evaluate import confusion_png, model_card

    metadata = json.loads((folder / "metadata.json").read_text())
    for attribute in metadata["attributes"]:
        measured = metadata["metrics"][attribute]
        (folder / f"confusion_{attribute}.png").write_bytes(
            confusion_png(measured["confusion"], measured["classes"], title=f"{attribute}: truth "
                          "(rows) against prediction (columns)")
        )  # fmt: skip
        (folder / f"card_{attribute}.md").write_text(
            model_card(
                version=f"{attribute} ({metadata['architecture']})", attribute=attribute,
                architecture=metadata["architecture"], snapshot=manifest, measured=measured,
                backend=metadata["backend"], epochs=metadata["epochs"],
                seconds=metadata["seconds"], images_per_s=metadata["images_per_s"],
                image_size=metadata.get("image_size"), pretrained=metadata.get("pretrained"),
                recipe=metadata.get("recipe"),
            )
        )  # fmt: skip


def promote_versions(
    *, settings: Settings, engine: Engine, versions: list[str],
    gate: registry.GateOptions | None = None, decided_by: str | None = None,
) -> list[registry.Decision]:  # fmt: skip
    models = ObjectStore.for_models(settings)
    return [
        registry.promote_if_better(
            engine=engine, store=models, version=version, cache_dir=artefact_cache(settings),
            picture_cache=picture_cache(settings),
            options=gate or registry.GateOptions.from_settings(settings),
            decided_by=decided_by,
        )
        for version in versions
    ]  # fmt: skip


def retrain(
    *, settings: Settings, engine: Engine, snapshot_options: SnapshotOptions,
    train_options: TrainOptions, separate_models: bool = False,
    gate: registry.GateOptions | None = None, who: str | None = None, progress=None,
) -> RetrainOutcome:  # fmt: skip
    """Snapshot, train (one network with a head per attribute, or one each), register, promote."""
    started = time.perf_counter()
    snapshot = snapshot_dataset(
        engine=engine, store=ObjectStore.for_models(settings), options=snapshot_options,
        created_by=who,
    )  # fmt: skip
    outcome = RetrainOutcome(snapshot)
    groups = (
        [[a] for a in snapshot_options.attributes]
        if separate_models
        else [list(snapshot_options.attributes)]
    )
    for attributes in groups:
        outcome.versions += train_snapshot(
            settings=settings, engine=engine, snapshot_id=snapshot.id, attributes=attributes,
            options=train_options, created_by=who, progress=progress,
        )  # fmt: skip
    outcome.decisions = promote_versions(
        settings=settings, engine=engine, versions=outcome.versions, gate=gate, decided_by=who
    )
    outcome.seconds = time.perf_counter() - started
    return outcome


def retrain_as_configured(
    *,
    settings: Settings,
    engine: Engine,
    snapshot_options: SnapshotOptions,
    train_options: TrainOptions,
    separate_models: bool = False,
    who: str | None = None,
    progress=None,
) -> RetrainOutcome:
    """`retrain` behind the configured promotion gate (CATALOGUE_PROMOTION_*): what `catalogue
    train` and the demo run."""
    return retrain(
        settings=settings,
        engine=engine,
        snapshot_options=snapshot_options,
        train_options=train_options,
        separate_models=separate_models,
        gate=registry.GateOptions.from_settings(settings),
        who=who,
        progress=progress,
    )


def verdicts(outcome: RetrainOutcome) -> list[str]:
    """A line per trained version: champion now, or still a candidate, and why."""
    return [
        f"{d.version}: {'champion' if d.promoted else 'stays candidate'}: {d.reason}"
        for d in outcome.decisions
    ]
