"""Scoring with a trained model needs nothing of training: a prediction process loads an artefact,
custom layers included, without importing `pipeline.train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.artefacts import ARTEFACT, METADATA, fetch_artefact

REPO = Path(__file__).resolve().parents[2]
SIZE = (32, 24)  # height, width

_SCORE = """
import json, sys
from pathlib import Path

import numpy as np

from pipeline.predict.champions import Champion, load_scoring_models


class FolderStore:  # the models bucket, as a folder
    def download(self, key, path):
        Path(path).write_bytes((Path(sys.argv[1]) / key).read_bytes())


champion = Champion(
    attribute="colour", version="colour-0001", version_id=1, run="run1",
    artefact_key="models/run1/model.keras", classes=("red", "blue"), image_size=(32, 24),
)
[model] = load_scoring_models([champion], store=FolderStore(), cache_dir=Path(sys.argv[2]))
pictures = np.full((2, 32, 24, 3), 255, np.uint8)
pictures[0, 8:24, 6:18] = (200, 0, 0)  # a red garment on white
pictures[1, 8:24, 6:18] = (0, 0, 200)  # a blue one
print(json.dumps({
    "answers": model.probabilities(pictures)["colour"].argmax(axis=1).tolist(),
    "layers": [type(layer).__name__ for layer in model.network.layers],
    "modules": sorted(m for m in sys.modules if m.startswith("pipeline.")),
}))
"""


def _colour_network():
    """A network that calls a picture red or blue from `ColourHistogram`'s foreground mean."""
    import keras

    from pipeline.layers import ColourHistogram

    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = ColourHistogram(name="colours")(x)
    head = keras.layers.Dense(2, activation="softmax", name="colour")
    model = keras.Model(inputs, head(x))
    kernel = np.zeros((68, 2), np.float32)  # 64 histogram shares, mean red, green, blue, share
    kernel[64], kernel[66] = (5, -5), (-5, 5)
    head.set_weights([kernel, np.zeros(2, np.float32)])
    return model


def _save_artefact(bucket: Path, layer_module: str) -> None:
    folder = bucket / "models" / "run1"
    folder.mkdir(parents=True)
    _colour_network().save(folder / ARTEFACT)
    if layer_module != "pipeline.layers":  # as saved before the layer left pipeline.train
        with zipfile.ZipFile(folder / ARTEFACT) as saved:
            files = {name: saved.read(name) for name in saved.namelist()}
        config = files["config.json"].decode()
        assert '"module": "pipeline.layers"' in config
        files["config.json"] = config.replace('"pipeline.layers"', f'"{layer_module}"').encode()
        with zipfile.ZipFile(folder / ARTEFACT, "w") as rewritten:
            for name, data in files.items():
                rewritten.writestr(name, data)
    (folder / METADATA).write_text(json.dumps({"attributes": ["colour"], "image_size": list(SIZE)}))


@pytest.mark.parametrize(
    "layer_module",
    [
        pytest.param("pipeline.layers", id="saved-now"),
        pytest.param("pipeline.train.models", id="saved-before-the-layer-moved"),
    ],
)
def test_an_artefact_scores_in_a_process_that_never_imports_training(tmp_path, layer_module):
    _save_artefact(tmp_path / "bucket", layer_module)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _SCORE, str(tmp_path / "bucket"), str(tmp_path / "cache")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    assert scored["answers"] == [0, 1]  # red, blue
    assert "ColourHistogram" in scored["layers"]
    assert "pipeline.layers" in scored["modules"]
    assert [m for m in scored["modules"] if m.startswith("pipeline.train")] == []
    assert sorted(p.name for p in (tmp_path / "cache" / "run1").iterdir()) == [METADATA, ARTEFACT]


class _CountingStore:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects, self.downloads = objects, []

    def download(self, key: str, path: Path) -> None:
        self.downloads.append(key)
        Path(path).write_bytes(self.objects[key])


def test_an_artefact_is_fetched_once_into_its_cache(tmp_path):
    store = _CountingStore({"models/r/model.keras": b"network", "models/r/metadata.json": b"{}"})
    folder = fetch_artefact(store, "models/r/model.keras", tmp_path / "r")
    again = fetch_artefact(store, "models/r/model.keras", tmp_path / "r")
    assert folder == again == tmp_path / "r"
    assert sorted(store.downloads) == ["models/r/metadata.json", "models/r/model.keras"]
    assert sorted(p.name for p in folder.iterdir()) == [METADATA, ARTEFACT]  # no .part left
