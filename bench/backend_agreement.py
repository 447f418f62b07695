"""A model trained on one Keras backend answers the same on the other: top-1 on an export's test
split, saved on the machine that trained it (JAX on the GPU) and compared on this one.

    KERAS_BACKEND=jax python3 bench/backend_agreement.py ARTEFACT shard.npz --save jax.npz
    .venv/bin/python bench/backend_agreement.py ARTEFACT shard.npz --compare jax.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artefact", type=Path, help="an artefact folder (model.keras, metadata)")
    parser.add_argument("export", type=Path, help="the training export it was trained on")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="write this backend's answers here (.npz)")
    action.add_argument("--compare", type=Path, help="compare with answers saved elsewhere")
    args = parser.parse_args()

    from pipeline.artefacts import load_artefact, predict_probabilities
    from pipeline.train.export import load_export
    from pipeline.train.fit import backend_name
    from pipeline.train.inputs import decode_all

    manifest, pictures, _ = load_export(args.export)
    model, metadata = load_artefact(args.artefact)
    size = tuple(metadata["image_size"])
    test = [item for item in manifest["images"] if item["split"] == "test"]
    decoded = decode_all(test, cache=pictures, image_size=size)
    keys = list(decoded)
    batch = np.stack([decoded[key] for key in keys])
    answers = predict_probabilities(model, batch, metadata["attributes"])
    if args.save:
        np.savez(args.save, backend=backend_name(), **answers)
        print(f"saved {len(keys)} answers on {backend_name()} to {args.save}")
        return
    saved = np.load(args.compare)
    report = {"pictures": len(keys), "trained_on": str(saved["backend"]), "here": backend_name()}
    for attribute, probabilities in answers.items():
        theirs = saved[attribute]
        report[attribute] = {
            "top1_agreement": float((theirs.argmax(1) == probabilities.argmax(1)).mean()),
            "max_probability_difference": float(np.abs(theirs - probabilities).max()),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
