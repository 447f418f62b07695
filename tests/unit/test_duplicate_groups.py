"""The union-find that turns same-product links into groups (`pipeline.similar.duplicates`)."""

from __future__ import annotations

import pytest

from pipeline.similar.duplicates import groups_of


@pytest.mark.parametrize(
    ("pairs", "existing", "expected"),
    [
        pytest.param([(5, 9)], {}, {5: 5, 9: 5}, id="a-new-pair-is-named-after-its-smallest-id"),
        pytest.param([(12, 9)], {9: 3, 3: 3}, {12: 3, 9: 3, 3: 3}, id="a-new-picture-joins"),
        pytest.param(
            [(20, 7), (20, 4)], {7: 2, 2: 2, 4: 4},
            {20: 2, 7: 2, 2: 2, 4: 2}, id="a-new-picture-merges-two-groups",
        ),
        pytest.param(
            [(1, 2), (3, 4), (2, 3)], {}, {1: 1, 2: 1, 3: 1, 4: 1}, id="a-chain-is-one-group",
        ),
    ],
)  # fmt: skip
def test_groups_take_the_smallest_image_id(pairs, existing, expected):
    assert groups_of(pairs, existing) == expected
