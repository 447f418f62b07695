"""Small Keras models with known answers, registered in the real registry for prediction tests.

`colour_by_channel`: calls a picture Red, Green or Blue by its strongest mean channel (a real
network on real pixels, so what the marketplace shows can be checked against the pictures).
`constant`: the same probabilities for every picture (a crafted unsure model for needs_review).
`pretrained_category`: MobileNetV2 with the shared ImageNet weights and an untrained category
head, so the embeddings predict writes (its penultimate layer) tell pictures apart as a trained
network's do; its category answers are arbitrary.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from pipeline.artefacts import ARTEFACT, METADATA
from pipeline.storage import ObjectStore
from pipeline.train import registry
from pipeline.train.fit import TrainedModel

SIZE = (80, 60)  # height, width: the photos' native size


@dataclass(frozen=True)
class KnownModel:
    network: Any
    attribute: str
    classes: list[str]
    image_size: tuple[int, int] = SIZE  # height, width


def _network(attribute: str, classes: list[str], kernel: np.ndarray, bias: np.ndarray):
    import keras

    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax", name=attribute)(x)
    model = keras.Model(inputs, outputs)
    model.get_layer(attribute).set_weights([kernel.astype("float32"), bias.astype("float32")])
    return KnownModel(model, attribute, classes)


def colour_by_channel(order: tuple[str, str, str] = ("Red", "Green", "Blue")):
    """Class i is channel i's name in `order` (permute it for a 'different' model)."""
    return _network("colour", list(order), np.eye(3) * 40.0, np.zeros(3))


def constant(attribute: str, probabilities: dict[str, float]):
    classes = list(probabilities)
    bias = np.log(np.array([probabilities[c] for c in classes]))
    return _network(attribute, classes, np.zeros((3, len(classes))), bias)


def pretrained_category(classes: list[str], network: str = "mobilenet_v2_035") -> KnownModel:
    """The product's MobileNetV2 (`build_model`) with the ImageNet weights from the shared
    weights folder (`load_pretrained`; raises `MissingWeights` when they are absent) and a
    category head of seeded random weights."""
    import keras

    from pipeline.train.fit import load_pretrained
    from pipeline.train.models import architecture, build_model

    keras.utils.set_random_seed(0)
    spec = architecture(network)
    model = build_model(network, {"category": len(classes)})
    load_pretrained(model, spec, weights_dir=None, download=False)
    return KnownModel(model, "category", classes, spec.image_size)


def register_model(
    engine: Engine,
    store: ObjectStore,
    model: KnownModel,
    folder: Path,
    *,
    champion: bool,
    automation: dict[str, Any] | None = None,
) -> str:
    """Save `model` as an artefact, register it as a candidate, and promote it if asked;
    `automation`: the calibrated threshold a trained model carries in its metrics."""
    attribute, classes = model.attribute, model.classes
    folder.mkdir(parents=True, exist_ok=True)
    model.network.save(folder / ARTEFACT)
    checksum = _snapshot(engine)
    metrics = {"accuracy": 0.5, "macro_f1": 0.5, "test_images": 0}
    if automation is not None:
        metrics["automation"] = automation
    (folder / METADATA).write_text(json.dumps({
        "architecture": "test_model", "backend": "tensorflow", "image_size": list(model.image_size),
        "epochs": 0, "seconds": 0, "images_per_s": 0, "attributes": [attribute],
        "classes": {attribute: classes}, "snapshot": checksum, "metrics": {attribute: metrics},
    }))  # fmt: skip
    trained = TrainedModel(folder=folder, attributes=[attribute], classes={attribute: classes},
                           metrics={attribute: metrics}, backend="tensorflow", seconds=0,
                           images_per_s=0)  # fmt: skip
    snapshot_id = _snapshot_id(engine, checksum)
    (version,) = registry.register(engine=engine, store=store, trained=trained,
                                   snapshot_id=snapshot_id, created_by="tests")  # fmt: skip
    if champion:
        registry.promote(engine=engine, version=version, who="tests")
    return version


def _snapshot(engine: Engine) -> str:
    checksum = secrets.token_hex(32)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO catalogue.dataset_snapshots (checksum, manifest_key, "
                "taxonomy_version_id, attributes, counts, images, created_by) "
                "SELECT :c, 'snapshots/tests.json', max(id), '{}', '{}', 0, 'tests' "
                "FROM catalogue.taxonomy_versions"
            ),
            {"c": checksum},
        )
    return checksum


def _snapshot_id(engine: Engine, checksum: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT id FROM catalogue.dataset_snapshots WHERE checksum = :c"), {"c": checksum}
        ).scalar_one()
