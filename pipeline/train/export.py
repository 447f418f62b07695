"""Training exports: a snapshot as one self-contained file, for a machine with a GPU and nothing
else (no database, no object store, a 64 MiB limit on what travels).

`export_snapshot` writes a compressed `.npz`: every picture decoded and resized to the network's
input size (uint8), each picture's split and labels, and the snapshot's manifest without the
object store. `load_export` gives back what `fit.train` needs, so `catalogue train --from-export`
trains exactly as from the database. The artefact folder it writes is registered when brought
back (`catalogue models register FOLDER`), against the snapshot the export names.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.train.inputs import ExportedPictures, PictureCache, decode_all

FORMAT = "catalogue-training-export/1"


def export_snapshot(
    manifest: dict[str, Any], *, cache: PictureCache, image_size: tuple[int, int], out: Path,
    snapshot_id: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the export; returns its size and counts."""
    items = manifest["images"]
    decoded = decode_all(items, cache=cache, image_size=image_size)
    keys = list(decoded)
    pictures = np.stack([decoded[k] for k in keys]) if keys else np.zeros((0, *image_size, 3))
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
        buffer, pictures=pictures.astype(np.uint8),
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )  # fmt: skip
    out.write_bytes(buffer.getvalue())
    return {"path": str(out), "bytes": out.stat().st_size, "pictures": len(keys)}


def load_export(path: Path) -> tuple[dict[str, Any], ExportedPictures, dict[str, Any]]:
    """(manifest, pictures, header) from an export file."""
    with np.load(Path(path), allow_pickle=False) as data:
        header = json.loads(bytes(data["header"]).decode())
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a training export ({FORMAT})")
        pictures = data["pictures"]
    arrays = {key: pictures[i] for i, key in enumerate(header["keys"])}
    return header["manifest"], ExportedPictures(arrays), header
