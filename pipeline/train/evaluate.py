"""Honest measures of a model on a snapshot's test split, and the pictures and card that go with it.

Per attribute: accuracy, macro-F1, top-2 accuracy, per-class precision/recall/support, the
confusion matrix (as numbers and as a PNG), and two references: the accuracy of a random classifier
(1 / classes) and of always answering the majority class of the training split.

Automation: the confidence above which a model's answers reach a target precision, learnt on the
validation split (`confidence_threshold`), and what it gives on the test split (`automation`): the
share of pictures filled in without a moderator (coverage) and the precision of those answers.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def metrics(
    probabilities: np.ndarray, truth: np.ndarray, classes: list[str], *, majority: str | None
) -> dict[str, Any]:
    """`probabilities`: (n, classes); `truth`: class indices (n,)."""
    predicted = probabilities.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    top2 = np.argsort(-probabilities, axis=1)[:, :2]
    per_class = {}
    f1s = []
    for i, name in enumerate(classes):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        support = int(confusion[i].sum())
        per_class[name] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "support": support,
        }
        if support:
            f1s.append(f1)
    n = len(truth)
    majority_index = classes.index(majority) if majority in classes else None
    return {
        "test_images": int(n),
        "classes": classes,
        "accuracy": round(float((predicted == truth).mean()) if n else 0.0, 4),
        "macro_f1": round(float(np.mean(f1s)) if f1s else 0.0, 4),
        "top2_accuracy": round(float((top2 == truth[:, None]).any(axis=1).mean()) if n else 0.0, 4),
        "random_accuracy": round(1 / k, 4),
        "majority_class": majority,
        "majority_accuracy": round(
            float((truth == majority_index).mean()) if n and majority_index is not None else 0.0, 4
        ),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


MIN_CALIBRATION_IMAGES = 50  # fewer validation pictures: no threshold, every answer is reviewed


def confidence_threshold(
    confidence: np.ndarray, correct: np.ndarray, *, target_precision: float
) -> float | None:
    """The lowest confidence at which the answers at least that sure reach `target_precision`
    on these (validation) pictures: the most pictures filled in at that precision. None when no
    confidence does, or when there are too few pictures to tell (every answer then goes to a
    moderator)."""
    if len(confidence) < MIN_CALIBRATION_IMAGES:
        return None
    order = np.argsort(-confidence, kind="stable")
    sure, right = confidence[order], correct[order].astype(np.float64)
    precision = np.cumsum(right) / np.arange(1, len(right) + 1)
    # answers tied at one confidence are taken or left together, as predict will
    last_of_tie = np.append(sure[1:] != sure[:-1], True)
    reaching = np.flatnonzero((precision >= target_precision) & last_of_tie)
    if not len(reaching):
        return None
    return float(sure[reaching[-1]])


def automation(
    probabilities: np.ndarray, truth: np.ndarray, *, threshold: float | None,
    target_precision: float, validation: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """What the threshold gives on these (test) pictures: the share answered without a moderator
    (coverage) and how often those answers are right (precision)."""
    n = len(truth)
    confidence = probabilities.max(axis=1) if n else np.zeros(0)
    automatic = confidence >= threshold if threshold is not None else np.zeros(n, dtype=bool)
    right = probabilities.argmax(axis=1) == truth if n else np.zeros(0, dtype=bool)
    filled = int(automatic.sum())
    return {
        "target_precision": target_precision,
        "threshold": None if threshold is None else round(threshold, 6),
        "validation": validation,
        "test_images": int(n),
        "automatic": filled,
        "coverage": round(filled / n, 4) if n else 0.0,
        "precision": round(float(right[automatic].mean()), 4) if filled else None,
    }


def calibrate(
    validation_p: np.ndarray, validation_truth: np.ndarray, test_p: np.ndarray,
    test_truth: np.ndarray, *, target_precision: float,
) -> dict[str, Any]:  # fmt: skip
    """The threshold from the validation split and what it gives on the test split."""
    n = len(validation_truth)
    confidence = validation_p.max(axis=1) if n else np.zeros(0)
    correct = validation_p.argmax(axis=1) == validation_truth if n else np.zeros(0, dtype=bool)
    threshold = confidence_threshold(confidence, correct, target_precision=target_precision)
    covered = confidence >= threshold if threshold is not None else np.zeros(n, dtype=bool)
    return automation(
        test_p, test_truth, threshold=threshold, target_precision=target_precision,
        validation={
            "images": int(n),
            "coverage": round(float(covered.mean()), 4) if n else 0.0,
            "precision": round(float(correct[covered].mean()), 4) if covered.any() else None,
        },
    )  # fmt: skip


def _automation_lines(automation: dict[str, Any] | None) -> list[str]:
    if automation is None:
        return []
    target = automation["target_precision"]
    seen = automation["validation"]
    if automation["threshold"] is None:
        why = (
            f"only {seen['images']} validation pictures (fewer than {MIN_CALIBRATION_IMAGES})"
            if seen["images"] < MIN_CALIBRATION_IMAGES
            else f"no confidence reached precision {target:.2f} on {seen['images']} validation "
            "pictures"
        )
        return ["## Automation", "", f"Every answer goes to review: {why}.", ""]
    precision = automation["precision"]
    return [
        "## Automation",
        "",
        f"Answers with confidence {automation['threshold']:.4f} or more are filled in without a "
        f"moderator; the rest are marked `needs_review`. The threshold was learnt on "
        f"{seen['images']} validation pictures for precision {target:.2f} (there: coverage "
        f"{seen['coverage']:.3f}).",
        "",
        f"On the test split: coverage **{automation['coverage']:.3f}** "
        f"({automation['automatic']} of {automation['test_images']} pictures) at precision "
        f"**{precision:.3f}**." if precision is not None else
        f"On the test split: no picture reached the threshold ({automation['test_images']}).",
        "",
    ]  # fmt: skip


def confusion_png(confusion: list[list[int]], classes: list[str], *, title: str) -> bytes:
    """The confusion matrix as a picture: rows are the truth, columns the prediction."""
    matrix = np.asarray(confusion, dtype=np.float64)
    k = len(classes)
    cell, margin = max(6, min(28, 900 // max(k, 1))), 170
    size = (margin + cell * k + 10, margin + cell * k + 30)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black")
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(k):
        draw.text((4, margin + i * cell + cell // 4), classes[i][:26], fill="black")
        for j in range(k):
            shade = int(255 * (1 - rows[i, j]))
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1,
                   margin + (i + 1) * cell - 1)  # fmt: skip
            draw.rectangle(box, fill=(shade, shade, 255) if i != j else (shade, 255, shade))
    for j in range(k):
        label = Image.new("RGB", (margin - 10, cell), "white")
        ImageDraw.Draw(label).text((2, cell // 4), classes[j][:26], fill="black")
        image.paste(label.rotate(90, expand=True), (margin + j * cell, 10 + 20))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def model_card(
    *, version: str, attribute: str, architecture: str, snapshot: dict[str, Any],
    measured: dict[str, Any], backend: str, epochs: int, seconds: float, images_per_s: float,
    image_size: list[int] | None = None, pretrained: dict[str, str] | None = None,
    recipe: list[dict[str, Any]] | None = None,
) -> str:  # fmt: skip
    worst = sorted(
        ((name, c) for name, c in measured["per_class"].items() if c["support"]),
        key=lambda item: item[1]["recall"],
    )[:5]
    lines = [
        f"# Model {version}: {attribute}",
        "",
        f"- network: `{architecture}`, trained {epochs} epochs on the `{backend}` backend "
        f"in {seconds:.0f} s ({images_per_s:.0f} images/s)",
        *([f"- input: {image_size[1]}x{image_size[0]} (width x height)"] if image_size else []),
        *(
            [
                f"- backbone: {pretrained['backbone']}, weights `{pretrained['weights']}` "
                f"(sha256 {pretrained['sha256']})"
            ]
            if pretrained
            else ["- backbone: trained from scratch"]
        ),
        *(
            [
                "- recipe: "
                + "; then ".join(
                    f"{p['epochs']} epochs training {p['trains']}"
                    + (f" at rate {p['learning_rate']:g}" if p["learning_rate"] else "")
                    + (", warmed up over the first" if p["warm_up_epochs"] else "")
                    for p in recipe
                )
            ]
            if recipe
            else []
        ),
        f"- dataset snapshot: {snapshot['checksum'][:12]} (taxonomy version "
        f"{snapshot['taxonomy_version_id']}), level `{snapshot['attributes'][attribute]['level']}`, "
        f"{len(measured['classes'])} classes",
        f"- classes left out (fewer than {snapshot['attributes'][attribute]['min_examples']} "
        f"training examples): {snapshot['attributes'][attribute]['left_out'] or 'none'}",
        "",
        f"## On the test split ({measured['test_images']} pictures never trained on)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| accuracy | {measured['accuracy']:.3f} |",
        f"| macro-F1 | {measured['macro_f1']:.3f} |",
        f"| top-2 accuracy | {measured['top2_accuracy']:.3f} |",
        f"| random classifier | {measured['random_accuracy']:.3f} |",
        f"| majority class ({measured['majority_class']}) | {measured['majority_accuracy']:.3f} |",
        "",
        "Weakest classes (recall): "
        + ", ".join(f"{name} {c['recall']:.2f} (n={c['support']})" for name, c in worst),
        "",
        *_automation_lines(measured.get("automation")),
        f"Confusion matrix: `confusion_{attribute}.png` beside this card.",
        "",
        "## Intended use",
        "",
        "Suggests the attribute for catalogue pictures of small fashion shops; a moderator's label "
        "always outranks it, and pictures it is unsure of go to the review queue.",
        "",
        "## Promotion",
        "",
        "It replaces the champion only when, on the same test pictures and the classes both know, "
        "it gains the promotion margin in accuracy and no class with enough test pictures loses "
        "more than the allowed recall where a paired test (exact McNemar, one-sided) on that "
        "class's pictures says the fall is not chance (`CATALOGUE_PROMOTION_*`). The verdict, with "
        "the overall paired test's p-values, is in `catalogue.model_versions.gate`.",
    ]
    return "\n".join(lines) + "\n"
