"""Pretrained backbones: their weights found on disk (never downloaded unless allowed), loaded,
answering the same on TensorFlow and JAX; the fine-tuning recipe's phases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.train.models import ARCHITECTURES
from pipeline.train.pretrained import SHARED_WEIGHTS, WEIGHTS, MissingWeights, find_weights

REPO = Path(__file__).resolve().parent.parent.parent
PRODUCTS = REPO.parent / "shared" / "data" / "fashion-products"


def test_a_missing_weights_file_is_one_line_naming_it_and_where_it_goes(tmp_path):
    with pytest.raises(MissingWeights) as caught:
        find_weights("mobilenet_v2_0.5", weights_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert WEIGHTS["mobilenet_v2_0.5"].filename in message and str(tmp_path) in message
    assert "CATALOGUE_WEIGHTS_DIR" in message and "CATALOGUE_WEIGHTS_DOWNLOAD=true" in message
    assert 'weights="imagenet"' in message  # how to fetch it on a machine with internet


def test_a_file_that_is_not_the_published_one_is_refused(tmp_path):
    (tmp_path / WEIGHTS["mobilenet_v2_0.35"].filename).write_bytes(b"not weights")
    with pytest.raises(MissingWeights, match=r"is not MobileNetV2 alpha 0\.35.*sha256"):
        find_weights("mobilenet_v2_0.35", weights_dir=tmp_path)


def test_the_recipe_trains_the_head_first_then_everything_warmed_up():
    from pipeline.train.fit import training_phases

    spec = ARCHITECTURES["mobilenet_v2_050"]
    head, whole = training_phases(spec, 12)
    assert (head.first_epoch, head.last_epoch, head.backbone_trainable) == (0, 2, False)
    assert (whole.first_epoch, whole.last_epoch, whole.backbone_trainable) == (2, 12, True)
    assert whole.learning_rate < spec.learning_rate and whole.warm_up
    assert [p.backbone_trainable for p in training_phases(spec, 1)] == [False]
    (scratch,) = training_phases(ARCHITECTURES["catalogue_net"], 12)
    assert (scratch.first_epoch, scratch.last_epoch) == (0, 12)


def test_the_fine_tune_trains_the_backbone_from_its_named_layer_on_batch_norm_frozen():
    import keras

    from pipeline.train.fit import set_backbone_trainable
    from pipeline.train.models import BACKBONE, build_model

    model = build_model("mobilenet_v2_035", {"category": 3})
    backbone = model.get_layer(BACKBONE)
    names = [layer.name for layer in backbone.layers]
    first = names.index("block_6_expand")
    set_backbone_trainable(model, False)
    assert not backbone.trainable_weights
    set_backbone_trainable(model, True, from_layer="block_6_expand")
    trained = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert (
        "block_6_expand" in trained and "Conv1" not in trained and "block_5_expand" not in trained
    )
    assert all(names.index(n) >= first for n in trained)
    assert not any(
        isinstance(backbone.get_layer(n), keras.layers.BatchNormalization) for n in trained
    )
    set_backbone_trainable(model, True)  # every layer, batch norm still frozen
    assert "Conv1" in {layer.name for layer in backbone.layers if layer.trainable}


_FEATURES = """
import json, sys
import numpy as np
from PIL import Image
from pipeline.train.fit import load_pretrained, set_backbone_trainable
from pipeline.train.models import ARCHITECTURES, BACKBONE, build_model
name, folder, *pictures = sys.argv[1:]
spec = ARCHITECTURES[name]
model = build_model(name, {"category": 3})
load_pretrained(model, spec, weights_dir=folder, download=False)
set_backbone_trainable(model, True)
batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((96, 128))) for p in pictures])
inner = model.get_layer(BACKBONE)
features = inner.predict(batch.astype("float32") / 127.5 - 1, verbose=0)
print(json.dumps(features.tolist()))
"""


@pytest.mark.parametrize("name", ["mobilenet_v2_035", "mobilenet_v2_050"])
def test_a_backbone_loads_its_weights_and_answers_the_same_on_tensorflow_and_jax(name):
    weights = WEIGHTS[ARCHITECTURES[name].pretrained]
    if not (SHARED_WEIGHTS / weights.filename).is_file() or not PRODUCTS.is_dir():
        pytest.skip(f"{weights.filename} or the product photos are not in ../shared")
    pictures = sorted((PRODUCTS / "images").glob("*.jpg"))[:6]
    answers = {}
    for backend in ("tensorflow", "jax"):
        result = subprocess.run(
            [sys.executable, "-c", _FEATURES, name, str(SHARED_WEIGHTS), *map(str, pictures)],
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True, text=True, timeout=300, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        answers[backend] = json.loads(result.stdout.strip().splitlines()[-1])
    import numpy as np

    tf_features, jax_features = (np.array(answers[b]) for b in ("tensorflow", "jax"))
    assert tf_features.shape[0] == 6 and tf_features.std() > 0.05  # ImageNet features, not zeros
    np.testing.assert_allclose(tf_features, jax_features, atol=2e-3, rtol=2e-3)
    assert (tf_features.argmax(1) == jax_features.argmax(1)).all()
