"""The confidence threshold each model learns for a target precision, and its coverage."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.evaluate import (
    MIN_CALIBRATION_IMAGES,
    automation,
    calibrate,
    confidence_threshold,
)


def _answers(n: int = 200, seed: int = 3):
    """Confidences in (0, 1) whose answers are right with probability = confidence."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.2, 1.0, n)
    correct = rng.uniform(size=n) < confidence
    return confidence, correct


def test_the_threshold_is_the_lowest_confidence_whose_answers_reach_the_precision():
    confidence, correct = _answers()
    threshold = confidence_threshold(confidence, correct, target_precision=0.95)
    assert threshold is not None
    kept = confidence >= threshold
    assert correct[kept].mean() >= 0.95
    # any lower confidence taken in as well brings the precision under the target
    for lower in np.sort(confidence[~kept])[::-1][:20]:
        assert correct[confidence >= lower].mean() < 0.95
    # a stricter target fills in fewer pictures
    stricter = confidence_threshold(confidence, correct, target_precision=0.99)
    assert stricter is None or stricter >= threshold


def test_answers_tied_at_one_confidence_are_taken_or_left_together():
    confidence = np.array([0.9] * 60 + [0.8] * 40)
    correct = np.array([True] * 60 + [True] * 30 + [False] * 10)  # 0.8: three in four right
    assert confidence_threshold(confidence, correct, target_precision=0.95) == 0.9
    assert confidence_threshold(confidence, correct, target_precision=0.9) == 0.8  # 90/100


def test_no_threshold_when_no_confidence_reaches_it_or_too_few_pictures_to_tell():
    confidence, correct = _answers()
    assert confidence_threshold(confidence, np.zeros_like(correct), target_precision=0.97) is None
    few = MIN_CALIBRATION_IMAGES - 1
    assert confidence_threshold(np.ones(few), np.ones(few, bool), target_precision=0.9) is None


def test_calibrate_learns_on_validation_and_reports_coverage_and_precision_on_test():
    rng = np.random.default_rng(0)

    def split(n):
        truth = rng.integers(0, 3, n)
        sure = rng.uniform(0.34, 1.0, n)
        right = rng.uniform(size=n) < sure
        answer = np.where(right, truth, (truth + 1) % 3)
        p = np.full((n, 3), 0.0)
        p[np.arange(n), answer] = sure
        p[np.arange(n), (answer + 2) % 3] = 1 - sure
        return p, truth

    validation, test = split(400), split(300)
    result = calibrate(*validation, *test, target_precision=0.9)
    threshold = result["threshold"]
    assert threshold is not None and result["validation"]["images"] == 400
    assert result["validation"]["precision"] >= 0.9
    p, truth = test
    filled = p.max(axis=1) >= threshold
    assert result["automatic"] == int(filled.sum()) and result["test_images"] == 300
    assert result["coverage"] == pytest.approx(filled.mean(), abs=1e-4)
    assert result["precision"] == pytest.approx(
        (p.argmax(axis=1) == truth)[filled].mean(), abs=1e-4
    )


def test_without_a_threshold_nothing_is_filled_in():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    result = automation(p, np.array([0, 1]), threshold=None, target_precision=0.97,
                        validation={"images": 0, "coverage": 0.0, "precision": None})  # fmt: skip
    assert (result["coverage"], result["automatic"], result["precision"]) == (0.0, 0, None)
