"""Training exports: a snapshot as one self-contained file, for a machine with a GPU and nothing
else (no database, no object store, a 64 MiB limit on what travels).

`export_snapshot` writes an `.npz`: every picture decoded and resized to the network's input size,
then stored as a lossless WebP (the same pixels back, at about a quarter of the raw size: the
14,867 colour-labelled shared photos at 80x60 take 52.5 MiB, where zlib over the raw pixels
needed 76.4 MiB), with each picture's split and labels and the snapshot's manifest without the
object store.
`load_export` gives back what `fit.train` needs, so `catalogue train --from-export` trains exactly
as from the database. The artefact folder it writes is registered when brought back
(`catalogue models register FOLDER`), against the snapshot the export names.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.train.errors import ExportError
from pipeline.train.inputs import ExportedPictures, PictureCache, decode_all

FORMAT = "catalogue-training-export/2"  # pictures as lossless WebP
RAW_FORMAT = "catalogue-training-export/1"  # pictures as one raw uint8 block (still read)


def export_snapshot(
    manifest: dict[str, Any], *, cache: PictureCache, image_size: tuple[int, int], out: Path,
    snapshot_id: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the export; returns its size and counts."""
    items = manifest["images"]
    decoded = decode_all(items, cache=cache, image_size=image_size)
    keys = list(decoded)
    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        encoded = list(pool.map(_lossless_webp, (decoded[k] for k in keys)))
    offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
    header = {
        "format": FORMAT,
        "snapshot_id": snapshot_id,
        "image_size": list(image_size),
        "keys": keys,
        "manifest": manifest,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        pictures=np.frombuffer(b"".join(encoded), dtype=np.uint8),
        offsets=offsets,
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )
    out.write_bytes(buffer.getvalue())
    return {"path": str(out), "bytes": out.stat().st_size, "pictures": len(keys)}


def load_export(path: Path) -> tuple[dict[str, Any], ExportedPictures, dict[str, Any]]:
    """(manifest, pictures, header) from an export file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"training export {path} does not exist")
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            arrays = _pictures(data, header, path)
    except ExportError:
        raise
    except Exception as error:  # not a zip, a cut-off file, missing members, not JSON, ...
        raise ExportError(
            f"{path} is not a readable training export ({type(error).__name__}: {error}): "
            "write it again with `catalogue snapshot export --out FILE.npz`"
        ) from None
    return header["manifest"], ExportedPictures(arrays), header


def _pictures(data, header: dict[str, Any], path: Path) -> dict[str, np.ndarray]:
    if header.get("format") == RAW_FORMAT:
        pictures = data["pictures"]
        return {key: pictures[i] for i, key in enumerate(header["keys"])}
    if header.get("format") != FORMAT:
        raise ExportError(
            f"{path} is a training export of format {header.get('format')!r}; this version "
            f"reads {FORMAT} and {RAW_FORMAT}: export the snapshot again with this version"
        )
    blob, offsets = data["pictures"].tobytes(), data["offsets"]
    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        decoded = pool.map(
            lambda i: _pixels(blob[offsets[i] : offsets[i + 1]]), range(len(offsets) - 1)
        )
        return dict(zip(header["keys"], decoded, strict=True))


def _lossless_webp(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", lossless=True, quality=100, method=4)
    return buffer.getvalue()


def _pixels(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
