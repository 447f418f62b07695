"""The champion models: which versions score, and their networks loaded from the models bucket.

A training run with a head per attribute is one artefact registered as one version per attribute;
when both champions come from it, the network is loaded and run once for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from pipeline.artefacts import (
    EMBEDDING,
    embedding_head,
    fetch_artefact,
    head_probabilities,
    load_artefact,
    with_embedding,
)
from pipeline.predict.errors import NoChampion, PredictError
from pipeline.storage import ObjectStore


@dataclass(frozen=True)
class Champion:
    attribute: str
    version: str
    version_id: int
    run: str
    artefact_key: str
    classes: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width)
    # the confidence from which its answers are filled in without review, learnt on its
    # validation split for the target precision (`evaluate.confidence_threshold`); None with
    # `calibrated`: no confidence reached it, every answer is reviewed. An older model that was
    # never calibrated is judged by the configured fixed thresholds.
    calibrated: bool = False
    review_below: float | None = None


@dataclass
class ScoringModel:
    """One loaded network and the champions (attributes) it answers for."""

    network: Any
    trained_attributes: list[str]  # the artefact's heads, in its metadata's order
    image_size: tuple[int, int]
    champions: dict[str, Champion] = field(default_factory=dict)

    def probabilities(self, pictures: np.ndarray) -> dict[str, np.ndarray]:
        """Class probabilities per champion attribute for a uint8 batch (N, height, width, 3),
        and under `EMBEDDING` each picture's embedding (not yet normalised)."""
        outputs = self.network.predict_on_batch(pictures)  # the first layer rescales the uint8
        answers = head_probabilities(outputs, self.trained_attributes, self.champions)
        answers[EMBEDDING] = np.asarray(outputs[EMBEDDING], dtype=np.float32)
        return answers

    @property
    def dims(self) -> int:
        """The embedding's width."""
        head = embedding_head(self.trained_attributes)
        return int(self.network.get_layer(head).input.shape[-1])


def current_champions(*, engine: Engine, attributes: list[str] | None = None) -> list[Champion]:
    """The champion of each attribute asked for (default: every attribute that has one)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT * FROM catalogue.model_versions WHERE status = 'champion' "
                "AND (CAST(:a AS text[]) IS NULL OR attribute = ANY(:a)) ORDER BY attribute"
            ),
            {"a": attributes},
        ).all()
    found = [_champion(row) for row in rows]
    missing = sorted(set(attributes or []) - {c.attribute for c in found})
    if missing or not found:
        what = ", ".join(missing) if missing else "any attribute"
        raise NoChampion(
            f"no champion model for {what} yet: train one (`catalogue train`, or the "
            "retrain_models DAG) or promote a candidate (`catalogue models promote VERSION`)"
        )
    return found


def pinned_champions(*, engine: Engine, versions: list[str]) -> list[Champion]:
    """The versions a run was planned with (a shard keeps them even if a promotion happens)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT * FROM catalogue.model_versions WHERE version = ANY(:v)"),
            {"v": versions},
        ).all()
    unknown = sorted(set(versions) - {r.version for r in rows})
    if unknown:
        raise PredictError(f"model versions {', '.join(unknown)} are not in the registry")
    return [_champion(row) for row in rows]


def _champion(row) -> Champion:
    automation = (row.metrics or {}).get("automation")
    return Champion(
        attribute=row.attribute, version=row.version, version_id=row.id, run=row.run,
        artefact_key=row.artefact_key, classes=tuple(row.classes),
        image_size=(int(row.image_size[0]), int(row.image_size[1])),
        calibrated=automation is not None,
        review_below=automation.get("threshold") if automation else None,
    )  # fmt: skip


def load_scoring_models(
    champions: list[Champion], *, store: ObjectStore, cache_dir: Path
) -> list[ScoringModel]:
    """Each artefact fetched once (cached by run) and loaded once, whatever the backend."""
    models: dict[str, ScoringModel] = {}
    for champion in champions:
        if champion.artefact_key not in models:
            folder = fetch_artefact(store, champion.artefact_key, cache_dir / champion.run)
            network, metadata = load_artefact(folder)
            models[champion.artefact_key] = ScoringModel(
                network=with_embedding(network, list(metadata["attributes"])),
                trained_attributes=list(metadata["attributes"]),
                image_size=(int(metadata["image_size"][0]), int(metadata["image_size"][1])),
            )
        model = models[champion.artefact_key]
        if champion.attribute not in model.trained_attributes:
            raise PredictError(
                f"{champion.version}'s artefact has no {champion.attribute} head "
                f"(it has {', '.join(model.trained_attributes)}): register it again"
            )
        model.champions[champion.attribute] = champion
    return list(models.values())
