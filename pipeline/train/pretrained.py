"""Pretrained backbone weights: files on disk, found in a configured order, never downloaded
unless the operator allows it.

Where a file is looked for: `CATALOGUE_WEIGHTS_DIR` when set; otherwise `../shared/weights` beside
the project (where present), then Keras's own cache `~/.keras/models` (where `weights="imagenet"`
puts the same files on a machine with internet). A file whose sha256 is known is checked. A
missing file is one line naming it, where to put it and how to fetch it elsewhere;
`CATALOGUE_WEIGHTS_DOWNLOAD=true` lets Keras fetch it into its cache instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import REPO_ROOT
from pipeline.train.errors import WeightsFileError

SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"
KERAS_CACHE = Path("~/.keras/models").expanduser()
_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


class MissingWeights(WeightsFileError):
    """A network's pretrained weights file is not on this machine (or not the right file)."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One published weights file of a backbone."""

    name: str
    filename: str
    sha256: str | None  # None: not recorded; the file is taken as found
    fetch: str  # how to get it on a machine with internet

    @property
    def url(self) -> str:
        return _KERAS_WEIGHTS + self.filename


def _mobilenet_v2(alpha: str, sha256: str | None) -> PretrainedWeights:
    return PretrainedWeights(
        name=f"MobileNetV2 alpha {alpha} (ImageNet, no top)",
        filename=f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5",
        sha256=sha256,
        fetch=(
            "python -c 'import keras; keras.applications.MobileNetV2(alpha="
            f'{alpha}, include_top=False, weights="imagenet")\' (it lands in ~/.keras/models)'
        ),
    )


WEIGHTS: dict[str, PretrainedWeights] = {
    "mobilenet_v2_0.35": _mobilenet_v2(
        "0.35", "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f"
    ),
    "mobilenet_v2_0.5": _mobilenet_v2(
        "0.5", "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05"
    ),
    "mobilenet_v2_1.0": _mobilenet_v2("1.0", None),
}


def folders(weights_dir: Path | None) -> list[Path]:
    """Where weights are looked for, in order."""
    if weights_dir is not None:
        return [Path(weights_dir).expanduser()]
    return [folder for folder in (SHARED_WEIGHTS, KERAS_CACHE) if folder.is_dir()] or [KERAS_CACHE]


def find_weights(key: str, *, weights_dir: Path | None = None, download: bool = False) -> Path:
    """The local file of the weights `key` (see WEIGHTS), checked; fetched into Keras's cache
    only when `download` is allowed."""
    weights = WEIGHTS[key]
    searched = folders(weights_dir)
    for folder in searched:
        path = folder / weights.filename
        if path.is_file():
            _check(path, weights)
            return path
    if download:
        import keras

        fetched = Path(
            keras.utils.get_file(
                weights.filename, weights.url, cache_subdir="models", file_hash=weights.sha256
            )
        )
        _check(fetched, weights)
        return fetched
    raise MissingWeights(
        f"{weights.name} needs {weights.filename}, which is not in "
        f"{' or '.join(str(f) for f in searched)}: put it there (CATALOGUE_WEIGHTS_DIR names the "
        f"folder); on a machine with internet, {weights.fetch}; or set "
        "CATALOGUE_WEIGHTS_DOWNLOAD=true to let this machine fetch it"
    )


def _check(path: Path, weights: PretrainedWeights) -> None:
    if weights.sha256 is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != weights.sha256:
        raise MissingWeights(
            f"{path} is not {weights.name}: its sha256 is {digest[:12]}..., expected "
            f"{weights.sha256[:12]}...; replace it with the published file"
        )
