"""Training exports: the pictures come back exactly as they were decoded (lossless), an export of
the earlier raw format still loads, and a file that is not an export is named, with what to do."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.train.errors import ExportError
from pipeline.train.export import FORMAT, RAW_FORMAT, export_snapshot, load_export
from pipeline.train.inputs import PictureCache, decode_all
from tests.cli import catalogue

SIZE = (80, 60)


def _manifest(tmp_path) -> tuple[dict, PictureCache]:
    """Six photos the way posts bring them: bigger than the training size, a greyscale one, a
    flat product on white, and noise (the hardest case for a lossless codec)."""
    cache = PictureCache(None, tmp_path / "cache")
    rng = np.random.default_rng(3)
    photos = [rng.integers(0, 256, (270, 216, 3), dtype=np.uint8) for _ in range(3)]
    white = np.full((270, 216, 3), 250, dtype=np.uint8)
    white[60:200, 50:160] = (180, 20, 40)
    photos += [white, rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)]
    images = []
    for i, pixels in enumerate([*photos, None]):
        key = f"posts/shop/{i}.jpg"
        picture = Image.fromarray(pixels) if pixels is not None else Image.new("L", (216, 270), 90)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=90)
        cache.path(key).write_bytes(buffer.getvalue())
        images.append({"key": key, "split": ("train", "validation", "test")[i % 3],
                       "labels": {"colour": ("Red", "White")[i % 2]}})  # fmt: skip
    manifest = {"checksum": "c0ffee", "images": images,
                "attributes": {"colour": {"classes": ["Red", "White"]}}}  # fmt: skip
    return manifest, cache


def test_an_export_gives_back_the_decoded_pictures_exactly(tmp_path):
    manifest, cache = _manifest(tmp_path)
    written = export_snapshot(manifest, cache=cache, image_size=SIZE, out=tmp_path / "x.npz",
                              snapshot_id=4)  # fmt: skip
    assert written["pictures"] == 6

    loaded, pictures, header = load_export(tmp_path / "x.npz")
    assert header["format"] == FORMAT and header["snapshot_id"] == 4 and loaded == manifest
    expected = decode_all(manifest["images"], cache=cache, image_size=SIZE)
    for key, array in expected.items():
        got = pictures.array(key, SIZE)
        assert got.dtype == np.uint8 and got.shape == (*SIZE, 3)
        np.testing.assert_array_equal(got, array, err_msg=key)


def test_an_export_of_the_raw_format_still_loads(tmp_path):
    manifest, cache = _manifest(tmp_path)
    decoded = decode_all(manifest["images"], cache=cache, image_size=SIZE)
    header = {"format": RAW_FORMAT, "snapshot_id": None, "image_size": list(SIZE),
              "keys": list(decoded), "manifest": manifest}  # fmt: skip
    np.savez_compressed(
        tmp_path / "old.npz", pictures=np.stack(list(decoded.values())),
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )  # fmt: skip
    _, pictures, _ = load_export(tmp_path / "old.npz")
    for key, array in decoded.items():
        np.testing.assert_array_equal(pictures.array(key, SIZE), array)


def test_a_cut_off_export_is_named_with_what_to_do(tmp_path):
    manifest, cache = _manifest(tmp_path)
    export_snapshot(manifest, cache=cache, image_size=SIZE, out=tmp_path / "x.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "x.npz").read_bytes()[:5000])  # a transfer that broke off
    with pytest.raises(ExportError, match=r"cut\.npz is not a readable training export.*"
                       r"catalogue snapshot export --out"):  # fmt: skip
        load_export(cut)
    with pytest.raises(FileNotFoundError, match=r"training export .*nothing\.npz does not exist"):
        load_export(tmp_path / "nothing.npz")


def test_training_from_a_cut_off_export_says_so_in_one_line(tmp_path):
    cut = tmp_path / "shard.npz"
    cut.write_bytes(b"PK\x03\x04 not really")
    result = catalogue({}, "train", "--from-export", str(cut), "--out", str(tmp_path / "a"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("catalogue:")]
    assert len(said) == 1 and "shard.npz is not a readable training export" in said[0], said
    assert not (tmp_path / "a").exists()
