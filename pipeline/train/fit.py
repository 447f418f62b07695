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

from pipeline.artefacts import ARTEFACT, METADATA, predict_probabilities
from pipeline.config import Settings, configured, setting
from pipeline.train import evaluate
from pipeline.train.errors import TrainingInterrupted, WeightsFileError
from pipeline.train.inputs import LabelledPictures, PictureCache, decode_all
from pipeline.train.models import architecture as architecture_spec
from pipeline.train.models import build_model


@dataclass(frozen=True)
class TrainOptions:
    architecture: str = setting("train_network")
    epochs: int = setting("train_epochs")
    batch_size: int = 64
    seed: int = 7
    image_size: tuple[int, int] | None = None  # default: the network's own
    workers: int = 4
    steps_per_epoch: int | None = None  # cap (tests); None: the whole train split
    # a local weights file (.weights.h5 or .keras, e.g. an earlier champion, or a pretrained
    # backbone saved in Keras format): layers whose names and shapes match start from it
    initial_weights: Path | None = setting("train_initial_weights")
    # where a pretrained backbone's published weights are looked for (see `pretrained.folders`),
    # and whether Keras may fetch them when they are not there
    weights_dir: Path | None = setting("weights_dir")
    weights_download: bool = setting("weights_download")
    # the precision the answers filled in without a moderator must reach (on validation)
    target_precision: float = setting("target_precision")

    @classmethod
    def from_settings(cls, settings: Settings, **choices: Any) -> TrainOptions:
        """The configured training options, with this run's choices (None: the setting)."""
        return configured(cls, settings, choices)


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
    """Fit one network with a head per attribute on the manifest's train split; `progress` is
    given a `progress.TrainingProgress` as it goes, `callbacks` are further Keras callbacks (a
    benchmark's timer). Ctrl-C stops it at once with `TrainingInterrupted`, nothing written."""
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
    pretrained = None
    if spec.pretrained:
        pretrained = load_pretrained(
            model, spec, weights_dir=options.weights_dir, download=options.weights_download
        )
    if options.initial_weights:
        load_initial_weights(model, Path(options.initial_weights))
    steps = options.steps_per_epoch or len(train_data)
    phases = training_phases(spec, options.epochs)
    watcher = None
    if progress:
        from pipeline.train.progress import ProgressCallback

        watcher = ProgressCallback(progress, epochs=options.epochs, steps=steps, phases=phases,
                                   attributes=attributes)  # fmt: skip
    callbacks = ([watcher] if watcher else []) + list(callbacks)
    history: dict[str, list[float]] = {}
    started = time.perf_counter()
    try:
        for number, phase in enumerate(phases, 1):
            if watcher:
                watcher.begin_phase(phase, number)
            if spec.pretrained:
                set_backbone_trainable(model, phase.backbone_trainable,
                                       from_layer=spec.fine_tune_from)  # fmt: skip
            compile_for_training(
                model, spec, attributes, total_steps=steps * (phase.last_epoch - phase.first_epoch),
                learning_rate=phase.learning_rate, warmup_steps=steps if phase.warm_up else 0,
            )  # fmt: skip
            fitted = model.fit(
                train_data,
                validation_data=validation_data if validation_items else None,
                shuffle=False,  # in order, so batches can be prefetched; items shuffled per epoch
                initial_epoch=phase.first_epoch,
                epochs=phase.last_epoch,
                steps_per_epoch=options.steps_per_epoch,
                callbacks=callbacks,
                verbose=0,
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"training interrupted after {time.perf_counter() - started:.0f}s: nothing was "
            "registered; run it again to start over"
        ) from None
    finally:
        train_data.close()  # no batch thread may keep the process alive (Ctrl-C included)
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
    measured = measure(model, manifest, attributes, classes, cache=cache, image_size=image_size,
                       target_precision=options.target_precision)  # fmt: skip
    metadata = {
        "architecture": options.architecture,
        "attributes": attributes,
        "classes": classes,
        "image_size": list(image_size),
        "snapshot": manifest["checksum"],
        "backend": backend_name(),
        "epochs": options.epochs,
        "recipe": [phase.describe() for phase in phases],
        "pretrained": pretrained,
        "seed": options.seed,
        "seconds": round(seconds, 1),
        "images_per_s": round(trained_images / seconds, 1),
        "metrics": measured,
    }
    (out / METADATA).write_text(json.dumps(metadata, indent=2))
    return TrainedModel(
        folder=out, attributes=attributes, classes=classes, metrics=measured,
        backend=backend_name(), seconds=seconds, images_per_s=trained_images / seconds,
        history=history,
    )  # fmt: skip


@dataclass(frozen=True)
class Phase:
    """Epochs [first_epoch, last_epoch) of one way of training."""

    first_epoch: int
    last_epoch: int
    backbone_trainable: bool
    learning_rate: float | None  # None: the network's own
    warm_up: bool = False  # the rate rises over the phase's first epoch
    name: str = "network"  # what it trains, as progress shows it
    from_layer: str | None = None  # the first backbone layer trained (None: every one)

    def describe(self) -> dict[str, Any]:
        if not self.backbone_trainable:
            trains = "the head (backbone frozen)"
        elif self.from_layer:
            trains = f"the backbone from {self.from_layer} on and the head, batch norm frozen"
        else:
            trains = "everything, backbone batch norm frozen"
        return {
            "epochs": self.last_epoch - self.first_epoch,
            "trains": trains,
            "learning_rate": self.learning_rate,
            "warm_up_epochs": int(self.warm_up),
        }


def training_phases(spec, epochs: int) -> list[Phase]:
    """A network trained from scratch: one phase. A pretrained backbone: its new head first
    (`head_epochs`, the backbone frozen, the network's rate), then the whole network at the lower
    `fine_tune_learning_rate`, warmed up: a fine-tune that starts at full rate on an untrained
    head throws away what the backbone knew (0.90 fell to 0.84 in the first look)."""
    if not spec.pretrained:
        return [Phase(0, epochs, True, None)]
    head = min(spec.head_epochs, epochs)
    phases = [Phase(0, head, False, None, name="head")] if head else []
    if epochs > head:
        phases.append(Phase(head, epochs, True, spec.fine_tune_learning_rate, warm_up=True,
                            name="fine-tune" if spec.fine_tune_from else "whole network",
                            from_layer=spec.fine_tune_from))  # fmt: skip
    return phases


def load_pretrained(model, spec, *, weights_dir: Path | None, download: bool) -> dict[str, str]:
    """The backbone's published weights into its layer (found by `pretrained.find_weights`);
    returns what the model card names: the file and its sha256."""
    import hashlib

    from pipeline.train.models import BACKBONE
    from pipeline.train.pretrained import WEIGHTS, find_weights

    weights = WEIGHTS[spec.pretrained]
    path = find_weights(spec.pretrained, weights_dir=weights_dir, download=download)
    model.get_layer(BACKBONE).load_weights(path)
    return {
        "backbone": weights.name,
        "weights": path.name,
        # find_weights checked a recorded sha256 already; only an unrecorded one is computed
        "sha256": weights.sha256 or hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def set_backbone_trainable(model, trainable: bool, *, from_layer: str | None = None) -> None:
    """Freeze the pretrained backbone, or let it train (from `from_layer` on, when given) with
    its batch norm kept frozen (in inference mode, on ImageNet's statistics: a small label set's
    batches would move them)."""
    import keras

    from pipeline.train.models import BACKBONE

    backbone = model.get_layer(BACKBONE)
    backbone.trainable = trainable
    names = [layer.name for layer in backbone.layers]
    first = names.index(from_layer) if from_layer else 0
    for position, layer in enumerate(backbone.layers):  # each one: an earlier call froze some
        layer.trainable = (
            trainable
            and position >= first
            and not isinstance(layer, keras.layers.BatchNormalization)
        )


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


def compile_for_training(
    model, spec, attributes: list[str], *, total_steps: int, learning_rate: float | None = None,
    warmup_steps: int = 0,
) -> None:  # fmt: skip
    """The network's optimizer (with its schedule over `total_steps`, at `learning_rate` when
    given, rising over `warmup_steps` first), one loss per head."""
    import keras

    model.compile(
        optimizer=_optimizer(
            spec, total_steps=total_steps, learning_rate=learning_rate, warmup_steps=warmup_steps
        ),
        loss={
            a: keras.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing)
            for a in attributes
        },
        metrics={a: ["accuracy"] for a in attributes},
        jit_compile="auto",
    )


def _optimizer(spec, *, total_steps: int, learning_rate: float | None, warmup_steps: int):
    import keras

    rate = learning_rate or spec.learning_rate
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if spec.cosine_schedule or warmup_steps:
        rate = keras.optimizers.schedules.CosineDecay(
            rate / 100 if warmup_steps else rate,
            decay_steps=max(total_steps - warmup_steps, 1),
            alpha=0.02,
            warmup_target=rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if spec.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    if spec.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=1e-4)
    return keras.optimizers.Adam(rate)


def measure(
    model, manifest: dict[str, Any], attributes: list[str], classes: dict[str, list[str]],
    *, cache: PictureCache, image_size: tuple[int, int], target_precision: float,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The model's metrics per attribute on the manifest's test split, and its automation: the
    confidence threshold learnt on the validation split for `target_precision`, with the coverage
    and precision it gives on the test split."""
    test = _scored(model, manifest, "test", attributes, classes, cache=cache, image_size=image_size)
    validation = _scored(model, manifest, "validation", attributes, classes, cache=cache,
                         image_size=image_size)  # fmt: skip
    measured = {}
    for attribute in attributes:
        names = classes[attribute]
        train_counts = Counter(
            item["labels"].get(attribute) for item in manifest["images"]
            if item["split"] == "train" and item["labels"].get(attribute) in names
        )  # fmt: skip
        majority = train_counts.most_common(1)[0][0] if train_counts else None
        p, truth = test[attribute]
        measured[attribute] = evaluate.metrics(p, truth, names, majority=majority)
        measured[attribute]["automation"] = evaluate.calibrate(
            *validation[attribute], p, truth, target_precision=target_precision
        )
    return measured


def _scored(
    model, manifest: dict[str, Any], split: str, attributes: list[str],
    classes: dict[str, list[str]], *, cache: PictureCache, image_size: tuple[int, int],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """attribute -> (probabilities, true class indices) over the split's labelled pictures."""
    items = _items(manifest, split, attributes)
    decoded = decode_all(items, cache=cache, image_size=image_size)
    probabilities = (
        predict_probabilities(model, np.stack([decoded[item["key"]] for item in items]), attributes)
        if items
        else {}
    )
    scored = {}
    for attribute in attributes:
        names = classes[attribute]
        chosen = [i for i, item in enumerate(items) if item["labels"].get(attribute) in names]
        truth = np.array([names.index(items[i]["labels"][attribute]) for i in chosen], dtype=int)
        p = probabilities[attribute][chosen] if items else np.zeros((0, len(names)), np.float32)
        scored[attribute] = (p, truth)
    return scored
