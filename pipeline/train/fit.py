"""Training: a network from `models.py` fitted on a snapshot's train split, with its validation
split watched, then measured on its test split.

Runs unchanged on Keras 3's TensorFlow backend (CPU, CI) and its JAX backend (GPU): the input
pipeline yields NumPy arrays, the models use only Keras layers, and the artefact is a `.keras`
file that either backend loads. Seeds are fixed; on a GPU, mixed precision is switched on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.train import evaluate
from pipeline.train.errors import WeightsFileError
from pipeline.train.inputs import LabelledPictures, PictureCache, decode_all
from pipeline.train.models import architecture as architecture_spec
from pipeline.train.models import build_model

ARTEFACT = "model.keras"
METADATA = "metadata.json"


@dataclass(frozen=True)
class TrainOptions:
    architecture: str = "catalogue_net"
    epochs: int = 10
    batch_size: int = 64
    seed: int = 7
    image_size: tuple[int, int] | None = None  # default: the network's own
    workers: int = 4
    steps_per_epoch: int | None = None  # cap (tests); None: the whole train split
    # a local weights file (.weights.h5 or .keras, e.g. an earlier champion, or a pretrained
    # backbone saved in Keras format): layers whose names and shapes match start from it
    initial_weights: Path | None = None


@dataclass
class TrainedModel:
    folder: Path  # the artefact, its metadata, cards and confusion matrices
    attributes: list[str]
    classes: dict[str, list[str]]
    metrics: dict[str, dict[str, Any]]
    backend: str
    seconds: float
    images_per_s: float
    history: dict[str, list[float]] = field(default_factory=dict)


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def _on_gpu() -> bool:
    backend = backend_name()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def train(
    *,
    manifest: dict[str, Any],
    cache: PictureCache,
    attributes: list[str],
    options: TrainOptions,
    out: Path,
    progress=None,
    callbacks: Sequence = (),
) -> TrainedModel:
    """Fit one network with a head per attribute on the manifest's train split; `callbacks` are
    further Keras callbacks (a benchmark's timer)."""
    import keras

    keras.utils.set_random_seed(options.seed)
    if _on_gpu():
        keras.mixed_precision.set_global_policy("mixed_float16")
    spec = architecture_spec(options.architecture)
    image_size = tuple(options.image_size or spec.image_size)
    classes = {a: manifest["attributes"][a]["classes"] for a in attributes}
    train_items = _items(manifest, "train", attributes)
    validation_items = _items(manifest, "validation", attributes)
    cache.warm([item["key"] for item in manifest["images"]])

    train_data = LabelledPictures(
        train_items, cache=cache, classes=classes, image_size=image_size,
        batch_size=options.batch_size, augment=True, shuffle=True, balanced=spec.balanced,
        seed=options.seed, workers=options.workers,
    )  # fmt: skip
    validation_data = LabelledPictures(
        validation_items, cache=cache, classes=classes, image_size=image_size,
        batch_size=options.batch_size, workers=options.workers,
        decoded=decode_all(validation_items, cache=cache, image_size=image_size),
    )  # fmt: skip
    model = build_model(options.architecture, {a: len(c) for a, c in classes.items()},
                        image_size=image_size)  # fmt: skip
    if options.initial_weights:
        load_initial_weights(model, Path(options.initial_weights))
    steps = options.steps_per_epoch or len(train_data)
    compile_for_training(model, spec, attributes, total_steps=steps * options.epochs)
    callbacks = ([_Progress(progress)] if progress else []) + list(callbacks)
    started = time.perf_counter()
    history = model.fit(
        train_data,
        validation_data=validation_data if validation_items else None,
        shuffle=False,  # in order, so batches can be prefetched; the items are shuffled per epoch
        epochs=options.epochs,
        steps_per_epoch=options.steps_per_epoch,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    trained_images = min(len(train_items), steps * options.batch_size) * options.epochs
    recalibrate_batch_norm(
        model,
        LabelledPictures(
            train_items, cache=cache, classes=classes, image_size=image_size,
            batch_size=options.batch_size, shuffle=True, seed=options.seed,
            workers=options.workers,
        ),
    )  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    save_for_inference(model, out / ARTEFACT)
    measured = measure(model, manifest, attributes, classes, cache=cache, image_size=image_size)
    metadata = {
        "architecture": options.architecture,
        "attributes": attributes,
        "classes": classes,
        "image_size": list(image_size),
        "snapshot": manifest["checksum"],
        "backend": backend_name(),
        "epochs": options.epochs,
        "seed": options.seed,
        "seconds": round(seconds, 1),
        "images_per_s": round(trained_images / seconds, 1),
        "metrics": measured,
    }
    (out / METADATA).write_text(json.dumps(metadata, indent=2))
    return TrainedModel(
        folder=out, attributes=attributes, classes=classes, metrics=measured,
        backend=backend_name(), seconds=seconds, images_per_s=trained_images / seconds,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )  # fmt: skip


def recalibrate_batch_norm(model, pictures, *, batches: int = 100) -> int:
    """Precise batch norm: each BatchNormalization layer's moving mean and variance become the
    average of its batch statistics over `batches` batches of `pictures` (un-augmented training
    pictures) at the final weights. During training the moving statistics trail the weights (by
    about a hundred steps at Keras' default momentum 0.99): on a few hundred steps (a small label
    set) they are far from what the trained network sees, and inference with them scatters.
    Returns the batches used (0 for a network without batch norm)."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    momentum = [layer.momentum for layer in norms]
    count = min(batches, len(pictures))
    try:
        for k in range(count):
            for layer in norms:  # the running mean of the k+1 batches seen
                layer.momentum = k / (k + 1)
            model(pictures[k][0], training=True)  # eager: the layers read momentum each call
    finally:
        for layer, value in zip(norms, momentum, strict=True):
            layer.momentum = value
    return count


def save_for_inference(model, path: Path) -> None:
    """The artefact without the optimizer's state (Adam keeps two slots per weight: a third of
    the size): what predict loads, and what a later run starts from with `initial_weights`."""
    import keras

    plain = keras.Model.from_config(model.get_config())  # not compiled: no optimizer
    plain.set_weights(model.get_weights())
    plain.save(path)


def load_initial_weights(model, path: Path) -> None:
    """Start from a local weights file; nothing is ever downloaded. Layers that do not match
    (the heads of another attribute, another number of classes) keep their fresh weights."""
    if not path.is_file():
        raise WeightsFileError(
            f"initial weights {path} do not exist: set CATALOGUE_TRAIN_INITIAL_WEIGHTS to a local "
            ".weights.h5 or .keras file, or unset it"
        )
    if not path.name.endswith((".weights.h5", ".keras")):
        raise WeightsFileError(f"initial weights {path}: expected a .weights.h5 or .keras file")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns for each skipped layer
        model.load_weights(path, skip_mismatch=True)


def _items(manifest: dict[str, Any], split: str, attributes: list[str]) -> list[dict[str, Any]]:
    return [
        item for item in manifest["images"]
        if item["split"] == split and any(a in item["labels"] for a in attributes)
    ]  # fmt: skip


def compile_for_training(model, spec, attributes: list[str], *, total_steps: int) -> None:
    """The network's optimizer (with its schedule over `total_steps`), one loss per head."""
    import keras

    model.compile(
        optimizer=_optimizer(spec, total_steps=total_steps),
        loss={
            a: keras.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing)
            for a in attributes
        },
        metrics={a: ["accuracy"] for a in attributes},
        jit_compile="auto",
    )


def _optimizer(spec, *, total_steps: int):
    import keras

    rate = spec.learning_rate
    if spec.cosine_schedule:
        rate = keras.optimizers.schedules.CosineDecay(
            spec.learning_rate, decay_steps=max(total_steps, 1), alpha=0.02
        )
    if spec.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    if spec.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=1e-4)
    return keras.optimizers.Adam(rate)


class _Progress:
    """A Keras callback reporting each epoch (made lazily so Keras imports stay in functions)."""

    def __new__(cls, report):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                report(epoch + 1, {k: round(float(v), 4) for k, v in (logs or {}).items()})

        return Callback()


def head_probabilities(outputs, heads: list[str], wanted) -> dict[str, np.ndarray]:
    """A network's answer as float32 probabilities per attribute; `heads` are the network's
    attributes in its metadata's order (a one-head network answers with a bare array)."""
    if not isinstance(outputs, dict):
        outputs = {heads[0]: outputs}
    return {a: np.asarray(outputs[a], dtype=np.float32) for a in wanted}


def predict_probabilities(model, pictures: np.ndarray, attributes: list[str], *, batch_size=256):
    # uint8 pictures go in as they are: the network's first layer rescales them
    outputs = model.predict(pictures, batch_size=batch_size, verbose=0)
    return head_probabilities(outputs, attributes, attributes)


def measure(
    model, manifest: dict[str, Any], attributes: list[str], classes: dict[str, list[str]],
    *, cache: PictureCache, image_size: tuple[int, int],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The model's metrics per attribute on the manifest's test split."""
    test = _items(manifest, "test", attributes)
    decoded = decode_all(test, cache=cache, image_size=image_size)
    pictures = (
        np.stack([decoded[item["key"]] for item in test])
        if test
        else np.zeros((0, *image_size, 3), dtype=np.uint8)
    )
    probabilities = predict_probabilities(model, pictures, attributes) if test else {}
    measured = {}
    for attribute in attributes:
        names = classes[attribute]
        chosen = [i for i, item in enumerate(test) if item["labels"].get(attribute) in names]
        truth = np.array([names.index(test[i]["labels"][attribute]) for i in chosen], dtype=int)
        train_counts = Counter(
            item["labels"].get(attribute) for item in manifest["images"]
            if item["split"] == "train" and item["labels"].get(attribute) in names
        )  # fmt: skip
        majority = train_counts.most_common(1)[0][0] if train_counts else None
        p = probabilities[attribute][chosen] if test else np.zeros((0, len(names)))
        measured[attribute] = evaluate.metrics(p, truth, names, majority=majority)
    return measured


def load_artefact(folder: Path):
    """The model and its metadata from an artefact folder (either backend)."""
    import keras

    metadata = json.loads((Path(folder) / METADATA).read_text())
    model = keras.models.load_model(Path(folder) / ARTEFACT, compile=False)
    return model, metadata
