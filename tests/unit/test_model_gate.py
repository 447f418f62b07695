"""The measures of a model and the gate a candidate passes to become champion."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.evaluate import confusion_png, metrics
from pipeline.train.registry import GateOptions, gate_verdict

CLASSES = ["Black", "Blue", "Red"]


def _answers(predicted: list[str], classes: list[str] = CLASSES) -> np.ndarray:
    """Probabilities that put 0.8 on each predicted class."""
    p = np.full((len(predicted), len(classes)), 0.2 / (len(classes) - 1), dtype=np.float32)
    for row, name in enumerate(predicted):
        p[row, classes.index(name)] = 0.8
    return p


def test_metrics_count_what_a_user_would_check():
    truth = ["Black"] * 4 + ["Blue"] * 4 + ["Red"] * 2
    predicted = ["Black"] * 4 + ["Blue", "Blue", "Blue", "Black"] + ["Blue", "Red"]
    m = metrics(_answers(predicted), np.array([CLASSES.index(t) for t in truth]), CLASSES,
                majority="Black")  # fmt: skip
    assert m["accuracy"] == 0.8
    assert m["per_class"]["Black"] == {"precision": 0.8, "recall": 1.0, "f1": 0.8889, "support": 4}
    assert m["per_class"]["Red"]["recall"] == 0.5
    assert m["confusion"][1] == [1, 3, 0]
    assert m["random_accuracy"] == round(1 / 3, 4) and m["majority_accuracy"] == 0.4
    assert m["top2_accuracy"] >= m["accuracy"]
    assert confusion_png(m["confusion"], CLASSES, title="colour").startswith(b"\x89PNG")


TRUTH = ["Black"] * 30 + ["Blue"] * 30 + ["Red"] * 30


@pytest.mark.parametrize(
    "candidate, champion, promoted, reason",
    [
        pytest.param(
            ["Black"] * 30 + ["Blue"] * 30 + ["Red"] * 25 + ["Blue"] * 5,
            ["Black"] * 30 + ["Blue"] * 30 + ["Red"] * 20 + ["Blue"] * 10,
            True, "beats", id="better",
        ),
        pytest.param(
            # one more mistake: worse, though no class falls by more than 0.05
            ["Black"] * 30 + ["Blue"] * 30 + ["Red"] * 24 + ["Blue"] * 6,
            ["Black"] * 30 + ["Blue"] * 30 + ["Red"] * 25 + ["Blue"] * 5,
            False, "below the margin", id="worse",
        ),
        pytest.param(
            # more right overall, but Blue's recall collapses from 1.0 to 0.8
            ["Black"] * 30 + ["Blue"] * 24 + ["Black"] * 6 + ["Red"] * 30,
            ["Black"] * 30 + ["Blue"] * 30 + ["Red"] * 15 + ["Blue"] * 15,
            False, "class 'Blue' recall fell", id="class-regression",
        ),
    ],
)  # fmt: skip
def test_gate(candidate, champion, promoted, reason):
    decision = gate_verdict(
        "colour-0002", TRUTH, candidate=(_answers(candidate), CLASSES),
        champion=("colour-0001", _answers(champion), CLASSES), options=GateOptions(),
    )  # fmt: skip
    assert decision.promoted is promoted
    assert reason in decision.reason


def test_gate_compares_on_the_classes_both_know():
    # the candidate knows a new class (Green); the champion cannot be blamed for missing it
    candidate_classes = [*CLASSES, "Green"]
    truth = TRUTH + ["Green"] * 10
    candidate = _answers(TRUTH + ["Green"] * 10, candidate_classes)
    champion = _answers(TRUTH + ["Black"] * 10)
    decision = gate_verdict(
        "colour-0002", truth, candidate=(candidate, candidate_classes),
        champion=("colour-0001", champion, CLASSES), options=GateOptions(),
    )  # fmt: skip
    assert decision.details["classes_compared"] == 3
    assert not decision.promoted and "gain +0.0000" in decision.reason
