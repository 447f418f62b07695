"""Where a trained model goes wrong on a protocol's test split, from its training export.

    .venv/bin/python bench/training.py --only category_8 --export .gpu/
    .venv/bin/python bench/training.py --from-export .gpu/category_8.npz --networks catalogue_net \
        --out /tmp/training.json --work /tmp/bench-training
    .venv/bin/python bench/errors.py .gpu/category_8.npz /tmp/bench-training/artefacts/category_8-catalogue_net

Prints the test accuracy with and without a horizontal flip averaged in, the most frequent
confusions, recall per class, and the near-identical picture pairs (pixel RMS difference under
0.03) whose labels disagree, within and across splits. `--montage FILE` draws the first 64 wrong
test pictures with their label and the model's answer: look at them to tell a network's mistake
from a label that no picture could settle. The montage holds the data set's pictures: keep it out
of the repository.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from pipeline.artefacts import load_artefact, predict_probabilities  # noqa: E402
from pipeline.train.export import load_export  # noqa: E402

NEAR_IDENTICAL_RMS = 0.03


def split(manifest, pictures, attribute, classes, name, size):
    items = [i for i in manifest["images"]
             if i["split"] == name and i["labels"].get(attribute) in classes]  # fmt: skip
    x = np.stack([pictures.array(i["key"], size) for i in items])
    y = np.array([classes.index(i["labels"][attribute]) for i in items])
    return x, y


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel RMS difference (0..1) of every picture in `a` to every picture in `b`."""
    a = a.reshape(len(a), -1).astype(np.float32) / 255
    b = b.reshape(len(b), -1).astype(np.float32) / 255
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0) / a.shape[1])


def near_identical(x, y, classes, other=None):
    """(pairs, pairs whose labels differ, those label pairs): within `x`, or from `x` to `other`."""
    pairs, differ = 0, collections.Counter()
    for start in range(0, len(x), 1000):
        block = rms_distances(x[start : start + 1000], x if other is None else other[0])
        for i, j in zip(*np.where(block < NEAR_IDENTICAL_RMS), strict=True):
            i += start
            if other is None and i >= j:
                continue
            label = (y if other is None else other[1])[j]
            pairs += 1
            if y[i] != label:
                differ[tuple(sorted((classes[y[i]], classes[label])))] += 1
    return pairs, sum(differ.values()), differ


def montage(x, truth, answer, classes, path: Path) -> None:
    from PIL import Image, ImageDraw

    wrong = np.where(answer != truth)[0][:64]
    width, height = 120, 190
    sheet = Image.new("RGB", (8 * width, max(1, (len(wrong) + 7) // 8) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(wrong):
        left, top = (n % 8) * width, (n // 8) * height
        sheet.paste(Image.fromarray(x[i]).resize((width, 160)), (left, top))
        draw.text((left + 2, top + 162), f"label {classes[truth[i]][:12]}", fill="black")
        draw.text((left + 2, top + 175), f"model {classes[answer[i]][:12]}", fill="red")
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="a training export (<protocol>.npz)")
    parser.add_argument("artefact", type=Path, help="a trained model's artefact folder")
    parser.add_argument("--montage", type=Path, help="draw the wrong test pictures into this PNG")
    args = parser.parse_args()

    manifest, pictures, _header = load_export(args.export)
    model, metadata = load_artefact(args.artefact)
    attribute = metadata["attributes"][0]
    classes = metadata["classes"][attribute]  # in the order of the model's answers
    size = tuple(model.input_shape[1:3])
    x, truth = split(manifest, pictures, attribute, classes, "test", size)
    plain = predict_probabilities(model, x, [attribute])[attribute]
    flipped = predict_probabilities(model, x[:, :, ::-1], [attribute])[attribute]
    answer = plain.argmax(1)
    print(f"{attribute}: {len(truth)} test pictures, accuracy {(answer == truth).mean():.3f}, "
          f"with the flip averaged in {((plain + flipped).argmax(1) == truth).mean():.3f}")  # fmt: skip
    wrong = collections.Counter(
        (classes[t], classes[a]) for t, a in zip(truth, answer, strict=True) if t != a
    )
    print(f"{sum(wrong.values())} wrong; most frequent (label -> model):")
    for (label, said), count in wrong.most_common(10):
        print(f"  {label} -> {said}: {count}")
    recall = {c: round(float((answer[truth == k] == k).mean()), 3) for k, c in enumerate(classes)}
    print("recall per class:", recall)

    train = split(manifest, pictures, attribute, classes, "train", size)
    for name, found in (
        ("within train", near_identical(*train, classes)),
        ("within test", near_identical(x, truth, classes)),
        ("test to train", near_identical(x, truth, classes, other=train)),
    ):
        pairs, differ, labels = found
        print(f"near-identical pairs {name}: {pairs}, labels differ in {differ} "
              f"{dict(labels.most_common(4))}")  # fmt: skip
    if args.montage:
        montage(x, truth, answer, classes, args.montage)
        print(f"wrote {args.montage}")


if __name__ == "__main__":
    main()
