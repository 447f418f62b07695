"""The rules a relabel job is checked by before it reads anything, shared by the command line and
the relabel DAG: each refusal names the job's fields, not one caller's options."""

from __future__ import annotations

import re
from datetime import date

import pytest

from pipeline.errors import CatalogueError
from pipeline.labels.jobs import JobError, Selection, validate_request, validate_undo

RENAME = {"kind": "rename", "attribute": "colour", "from_values": ["Navy Blue"], "to": "Blue"}
MOVE = {"kind": "move", "attribute": "colour", "to": "Blue", "selection": Selection(account="a")}


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(RENAME, id="rename"),
        pytest.param(MOVE, id="move"),
        pytest.param(
            {**MOVE, "selection": Selection(like="B0x00000/1", account="a")}, id="move-like"
        ),
        pytest.param({**MOVE, "selection": Selection(like="A0x00000")}, id="move-like-post"),
        pytest.param(
            {
                "kind": "clear",
                "attribute": "category",
                "selection": Selection(since=date(2026, 1, 1)),
            },
            id="clear",
        ),
    ],
)
def test_a_job_asked_as_it_can_run_passes(request_):
    validate_request(**request_)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param({**RENAME, "kind": "merge"}, "unknown job 'merge'", id="unknown-kind"),
        pytest.param({**MOVE, "attribute": ""}, "move needs the attribute", id="no-attribute"),
        pytest.param(
            {**RENAME, "from_values": []}, "rename needs the values to replace", id="rename-no-from"
        ),
        pytest.param({**RENAME, "to": None}, "the target value (to)", id="rename-no-to"),
        pytest.param(
            {**RENAME, "selection": Selection(account="a", value=["Red"])},
            "rename takes no filter (account, value given)",
            id="rename-with-a-filter",
        ),
        pytest.param(
            {**MOVE, "from_values": ["Red"]},
            "move takes no values to replace (from)",
            id="move-with-from",
        ),
        pytest.param({**MOVE, "to": ""}, "move needs the target value (to)", id="move-no-to"),
        pytest.param(
            {**MOVE, "selection": Selection()},
            "move needs a filter (account, value, predicted, shortcodes, since, until, like)",
            id="move-without-filter",
        ),
        pytest.param(
            {"kind": "clear", "attribute": "colour"}, "clear needs a filter", id="clear-everything"
        ),
        pytest.param(
            {**MOVE, "selection": Selection(like="B0x00000/first")},
            "like 'B0x00000/first' is not a picture: write SHORTCODE, or SHORTCODE/POSITION",
            id="like-not-a-picture",
        ),
        pytest.param(
            {**RENAME, "selection": Selection(like="B0x00000/1")},
            "rename takes no filter (like given)",
            id="rename-like",
        ),
    ],
)
def test_a_job_that_cannot_run_is_refused_in_the_jobs_terms(request_, message):
    with pytest.raises(JobError, match=re.escape(message)):
        validate_request(**request_)


@pytest.mark.parametrize("job_id", [None, 0])
def test_an_undo_needs_the_jobs_number(job_id):
    with pytest.raises(CatalogueError, match="undo needs the number of the job to undo"):
        validate_undo(job_id=job_id)
    validate_undo(job_id=7)
