"""A trained model as something to score with, shared by training and prediction.

An artefact is a folder: the network (`model.keras`, without optimizer state, loadable on either
backend) and its `metadata.json` (attributes, classes, input size, metrics). Training writes it
and its registry gate scores with it; prediction only reads it. Here: where fetched artefacts are
cached, fetching one from the models bucket, loading it, a network's answers as probabilities per
attribute, and a picture decoded to a network's input exactly as training decoded it.

Nothing here imports `pipeline.train` or, at import, Keras: a prediction process loads only what
scoring needs (`pipeline.layers` for the custom layers a saved network holds).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the GPU machine trains from an export, with no object store client
    from pipeline.config import Settings
    from pipeline.storage import ObjectStore

ARTEFACT = "model.keras"
METADATA = "metadata.json"
EMBEDDING = "embedding"  # the output `with_embedding` adds: the heads' input, the picture's vector


def artefact_cache(settings: Settings) -> Path:
    """Where fetched artefacts are kept, a folder per training run."""
    return settings.state_dir / "cache" / "artefacts"


def fetch_artefact(store: ObjectStore, artefact_key: str, folder: Path) -> Path:
    """Download an artefact and its metadata into `folder` (kept as a cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = artefact_key.rsplit("/", 1)[0]
    for name in (ARTEFACT, METADATA):
        target = folder / name
        if not target.exists():
            partial = folder / f"{name}.part"
            store.download(f"{prefix}/{name}", partial)
            partial.replace(target)
    return folder


def load_artefact(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The model and its metadata from an artefact folder (either backend)."""
    import keras

    from pipeline.layers import CUSTOM_OBJECTS

    metadata = json.loads((Path(folder) / METADATA).read_text())
    model = keras.models.load_model(
        Path(folder) / ARTEFACT, custom_objects=CUSTOM_OBJECTS, compile=False
    )
    return model, metadata


def embedding_head(heads: list[str]) -> str:
    """The head whose input is the picture's embedding: the category head when there is one."""
    from pipeline.similar import EMBEDDING_ATTRIBUTE

    return EMBEDDING_ATTRIBUTE if EMBEDDING_ATTRIBUTE in heads else heads[0]


def with_embedding(model, heads: list[str]):
    """The network answering its heads and, as output `embedding`, the layer its category head
    reads (the penultimate layer: the unit-length embedding of a network built with one, else
    the shared features, after dropout, which is a no-op when scoring). One pass gives both; the
    weights are the model's own."""
    import keras

    outputs = {name: model.get_layer(name).output for name in heads}
    outputs[EMBEDDING] = model.get_layer(embedding_head(heads)).input
    return keras.Model(model.inputs, outputs, name=f"{model.name}_with_embedding")


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


def decode(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 array of `size` (height, width)."""
    height, width = size
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (width, height))  # JPEG: decode at the smallest DCT scale >= size
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(image, dtype=np.uint8)
