"""The networks: one softmax head per attribute, every seed baseline buildable, and a start from
a local weights file that loads only what matches."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.fit import WeightsFileError, load_initial_weights, recalibrate_batch_norm
from pipeline.train.models import ARCHITECTURES, UnknownArchitecture, build_model


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_network_gives_a_distribution_per_attribute(name):
    model = build_model(name, {"colour": 5, "category": 3})
    height, width = ARCHITECTURES[name].image_size
    pictures = np.random.default_rng(0).uniform(0, 255, (2, height, width, 3)).astype("float32")
    outputs = model.predict(pictures, verbose=0)
    assert set(outputs) == {"colour", "category"}
    assert outputs["colour"].shape == (2, 5) and outputs["category"].shape == (2, 3)
    np.testing.assert_allclose(outputs["colour"].sum(axis=1), 1, rtol=1e-5)


def test_an_unknown_network_is_named():
    with pytest.raises(UnknownArchitecture, match=r"no network 'resnet9000'.*catalogue_net"):
        build_model("resnet9000", {"colour": 2})


def test_initial_weights_load_the_backbone_and_leave_other_heads_fresh(tmp_path):
    earlier = build_model("catalogue_net", {"colour": 18})
    earlier.save(tmp_path / "colour.keras")
    model = build_model("catalogue_net", {"category": 40})
    fresh_head = model.get_layer("category").get_weights()[0].copy()
    load_initial_weights(model, tmp_path / "colour.keras")

    def first_conv(m):
        return next(layer for layer in m.layers if layer.name.startswith("conv2d")).get_weights()[0]

    np.testing.assert_array_equal(first_conv(model), first_conv(earlier))
    np.testing.assert_array_equal(model.get_layer("category").get_weights()[0], fresh_head)


def test_a_missing_weights_file_is_named(tmp_path):
    model = build_model("compact_80x60", {"colour": 2})
    with pytest.raises(WeightsFileError, match=r"nope\.weights\.h5 do not exist"):
        load_initial_weights(model, tmp_path / "nope.weights.h5")


def test_batch_norm_statistics_are_recomputed_at_the_final_weights():
    """Precise batch norm: after training, inference normalises with the average statistics of
    the training pictures, not with moving averages that trail the weights (a small label set
    trains a few hundred steps: far too few for momentum 0.99)."""
    import keras

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="norm")(inputs))
    rng = np.random.default_rng(0)
    batches = [
        (rng.normal(loc, scale, (8, 4, 4, 3)).astype("float32"), None)
        for loc, scale in ((10, 2), (20, 3), (30, 4))
    ]
    assert recalibrate_batch_norm(model, batches) == 3

    norm = model.get_layer("norm")
    expected_mean = np.mean([x.mean(axis=(0, 1, 2)) for x, _ in batches], axis=0)
    expected_var = np.mean([x.var(axis=(0, 1, 2)) for x, _ in batches], axis=0)
    np.testing.assert_allclose(np.asarray(norm.moving_mean), expected_mean, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(norm.moving_variance), expected_var, rtol=1e-3)
    assert norm.momentum == 0.99  # training later goes on as before
    assert recalibrate_batch_norm(build_model("compact_80x60", {"colour": 2}), batches) == 0


def test_the_colour_features_see_the_garment_not_the_white_background(tmp_path):
    import keras

    from pipeline.layers import ColourHistogram

    white = np.ones((3, 128, 96, 3), np.float32)  # pixels in [-1, 1]
    pictures = white.copy()
    pictures[0, 32:96, 24:72] = [-1, -1, 0.9]  # a blue garment on white, a quarter of the picture
    pictures[1, 32:96, 24:72] = [0.9, -1, -1]  # the same garment in red
    features = np.asarray(ColourHistogram()(pictures))
    histogram, mean, share = features[:, :64], features[:, 64:67], features[:, 67]
    blue, red, white_bin = 0 * 16 + 0 * 4 + 3, 3 * 16 + 0 * 4 + 0, 63
    assert histogram[0].argmax() == blue and histogram[1].argmax() == red
    assert histogram[0, blue] > 0.8  # the background hardly counts
    np.testing.assert_allclose(mean[0], [-1, -1, 0.9], atol=0.2)
    assert histogram[2].argmax() == white_bin  # a white garment is white, not nothing
    assert 0.15 < share[0] < 0.4 and share[2] < 0.05

    # saved and loaded as part of a network (what predict does)
    inputs = keras.Input((128, 96, 3))
    model = keras.Model(inputs, ColourHistogram(name="colours")(inputs))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(again(pictures)), features, atol=1e-6)
