"""The pages where labels change: the review grid and its label API, a picture's page, bulk
relabelling (dry run, apply, undo) and the jobs.

Every write is `pipeline.labels`'s: `write_labels` in `label_transaction` for the grid and the
picture page (one `label` job per action, each label guarded by the label id the page was drawn
with), `run_job` and `undo_job` for bulk relabelling, exactly as the command line calls them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from pipeline.errors import CatalogueError
from pipeline.labels.history import WantedLabel, label_transaction, write_labels
from pipeline.labels.review import REASONS, review_count, review_page
from pipeline.web import pages, users
from pipeline.web.auth import moderator, viewer, who
from pipeline.web.forms import (
    RequestRefused,
    attribute_of,
    counted,
    filter_form,
    filter_query,
    number,
    plain,
    relabel_form,
    render,
    review_filter,
    selection,
)

GRID_LIMIT = 200
MAX_GRID = 500
MAX_LABELS_PER_REQUEST = 5000

router = APIRouter()


# -- review --------------------------------------------------------------------------------------
@router.get("/")
def home(session: users.SignedIn = Depends(viewer)):
    return RedirectResponse("/review", status_code=303)


@router.get("/review")
def review(request: Request, session: users.SignedIn = Depends(viewer)):
    engine, params = request.app.state.engine, request.query_params
    taxonomy = pages.taxonomy(engine)
    attribute = attribute_of(taxonomy, params.get("attribute"))
    limit = number(params.get("limit"), GRID_LIMIT, 1, MAX_GRID, "limit")
    offset = number(params.get("offset"), 0, 0, 10**9, "offset")
    # one picture more than the page: whether a next page exists, whatever the count's cap
    found = review_page(engine=engine, limit=limit + 1, attribute=attribute, taxonomy=taxonomy,
                        filters=review_filter(params), offset=offset,
                        count_cap=request.app.state.count_cap)  # fmt: skip
    shown = found.items[:limit]
    latest = pages.latest_labels(engine, [item.image_id for item in shown])
    cells = []
    for item in shown:
        label = latest.get(item.image_id, {}).get(attribute, {})
        top = (item.suggestions.get(attribute) or [None])[0]
        cells.append({
            "image_id": item.image_id, "shortcode": item.shortcode, "position": item.position,
            "account": item.account, "label": label.get("value"),
            "label_id": label.get("label_id") or 0,
            "suggestion": top["value"] if top else None,
            "confidence": float(top["confidence"]) if top else None,
            "reason": item.reason if item.tier == 0 else REASONS[item.tier],
        })  # fmt: skip
    return render(
        request, session, "review.html", title="Review", attribute=attribute,
        attributes=list(taxonomy.attributes), filters=filter_form(params),
        cells=cells, remaining=counted(found.total, found.more), offset=offset, limit=limit,
        more_pages=len(found.items) > limit,
        choices=pages.taxonomy_choices(taxonomy)[attribute], query=filter_query(params, attribute),
    )  # fmt: skip


@router.get("/api/review/count")
def remaining_count(request: Request, session: users.SignedIn = Depends(viewer)):
    engine, params = request.app.state.engine, request.query_params
    taxonomy = pages.taxonomy(engine)
    attribute = attribute_of(taxonomy, params.get("attribute"))
    total, more = review_count(engine=engine, attribute=attribute, taxonomy=taxonomy,
                               filters=review_filter(params),
                               cap=request.app.state.count_cap)  # fmt: skip
    return {"remaining": total, "more": more, "shown": counted(total, more)}


@router.post("/api/labels")
async def set_labels(request: Request, session: users.SignedIn = Depends(moderator)):
    """Set one attribute of some pictures, as one job: JSON {"attribute", "labels": [{"image_id",
    "value" (empty: clear), "expected_label_id" (the label the page showed; 0: none)}]}. A label
    someone changed since is not written: it comes back in `stale` with its new value."""
    try:
        body = await request.json()
        attribute, rows = str(body["attribute"]), list(body["labels"])
    except (ValueError, KeyError, TypeError):
        raise RequestRefused(
            'send JSON {"attribute": A, "labels": [{"image_id", "value", "expected_label_id"}]}'
        ) from None
    if not 0 < len(rows) <= MAX_LABELS_PER_REQUEST:
        raise RequestRefused(f"send 1 to {MAX_LABELS_PER_REQUEST} labels at a time")
    return await run_in_threadpool(write, request, session, attribute, rows, body.get("note"))


@router.post("/api/labels/latest")
async def labels_latest(request: Request, session: users.SignedIn = Depends(viewer)):
    try:
        body = await request.json()
        attribute, ids = str(body["attribute"]), [int(i) for i in body["image_ids"]][:MAX_GRID]
    except (ValueError, KeyError, TypeError):
        raise RequestRefused('send JSON {"attribute": A, "image_ids": [...]}') from None
    latest = pages.latest_labels(request.app.state.engine, ids)
    return {"labels": {str(i): latest.get(i, {}).get(attribute) for i in ids}}


def write(
    request: Request, session: users.SignedIn, attribute: str, rows: list[dict], note: Any = None
) -> dict[str, Any]:
    engine = request.app.state.engine
    spec = pages.taxonomy(engine).attribute(attribute)
    wanted = []
    for row in rows:
        try:
            value = spec.canonical(str(row["value"])) if row.get("value") else None
            expected = row.get("expected_label_id")
            wanted.append(WantedLabel(
                int(row["image_id"]), attribute, value, note=str(note)[:500] if note else None,
                expected_label_id=None if expected is None else int(expected),
            ))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CatalogueError):
                raise
            raise RequestRefused("each label needs image_id, value, expected_label_id") from None
    ids = [w.image_id for w in wanted]
    if len(set(ids)) != len(ids):
        raise RequestRefused("a picture appears twice: send each picture once")
    unknown = sorted(set(ids) - pages.live_images(engine, ids))
    if unknown:
        raise RequestRefused(f"no picture {unknown[0]} in the catalogue (taken down?)", 404)
    outcome = label_transaction(
        engine,
        lambda connection: write_labels(
            connection=connection, kind="label", who=who(session),
            arguments={"attribute": attribute, "images": len(wanted), "via": "workbench"},
            wanted=wanted,
        ),
    )  # fmt: skip
    latest = pages.latest_labels(engine, [w.image_id for w in wanted])
    now = {w.image_id: latest.get(w.image_id, {}).get(attribute, {}) for w in outcome.stale}
    return {
        "job_id": outcome.job_id, "written": outcome.written, "unchanged": outcome.unchanged,
        "stale": [{"image_id": w.image_id, "wanted": w.value, "now": now[w.image_id].get("value"),
                   "by": now[w.image_id].get("created_by")} for w in outcome.stale],
        "labels": {str(i): labels.get(attribute) for i, labels in latest.items()},
    }  # fmt: skip


def announce(request: Request, job_id: int | None, written: int) -> BackgroundTask | None:
    """Tell Airflow that labels changed (the retrain DAG listens), after the answer is sent."""
    if not job_id or not written:
        return None
    from pipeline.labels.announce import announce_labels_changed

    return BackgroundTask(announce_labels_changed, settings=request.app.state.settings,
                          job_id=job_id, labels_written=written)  # fmt: skip


# -- picture -------------------------------------------------------------------------------------
@router.get("/pictures/{image_id}")
def picture_page(image_id: int, request: Request, session: users.SignedIn = Depends(viewer)):
    return _picture(request, session, image_id)


def _picture(request: Request, session: users.SignedIn, image_id: int, status: int = 200,
             **extra: Any):  # fmt: skip
    engine = request.app.state.engine
    found = pages.picture(engine, image_id)
    choices = pages.taxonomy_choices(pages.taxonomy(engine))
    return render(request, session, "picture.html", status, title=found.shortcode,
                  picture=found, choices=choices, **extra)  # fmt: skip


@router.post("/pictures/{image_id}/labels")
async def picture_label(image_id: int, request: Request,
                        session: users.SignedIn = Depends(moderator)):  # fmt: skip
    form = await request.form()
    attribute = str(form.get("attribute", ""))
    row = {"image_id": image_id, "value": str(form.get("value", "")) or None,
           "expected_label_id": str(form.get("expected_label_id", "") or "0")}  # fmt: skip
    result = await run_in_threadpool(write, request, session, attribute, [row],
                                     form.get("note") or None)  # fmt: skip
    if result["stale"]:
        stale = result["stale"][0]
        return _picture(
            request, session, image_id, 409,
            error=(f"not saved: its {attribute} was changed by {stale['by']} since this page was "
                   f"drawn; it is now {stale['now'] or '(cleared)'}. Set it again to overwrite."),
        )  # fmt: skip
    return RedirectResponse(f"/pictures/{image_id}", status_code=303)


# -- relabel -------------------------------------------------------------------------------------
@router.get("/relabel")
def relabel_page(request: Request, session: users.SignedIn = Depends(viewer)):
    return render(request, session, "relabel.html", title="Bulk relabel",
                  attributes=list(pages.taxonomy(request.app.state.engine).attributes),
                  form=relabel_form(request.query_params), outcome=None)  # fmt: skip


@router.post("/relabel")
async def relabel(request: Request, session: users.SignedIn = Depends(moderator)):
    """A rename, move or clear: a dry run (the count and a sample) unless `confirm`."""
    from pipeline.labels.jobs import run_job

    engine = request.app.state.engine
    form = relabel_form(await request.form())
    kind = form["kind"]
    outcome = await run_in_threadpool(
        run_job, engine=engine, kind=kind, attribute=form["attribute"], who=who(session),
        to=form["to"] or None,
        from_values=[form["from"]] if kind == "rename" and form["from"] else None,
        selection=selection(form) if kind != "rename" else None,
        dry_run=not form["confirm"], note=form["note"] or None,
    )  # fmt: skip
    response = render(request, session, "relabel.html", title="Bulk relabel",
                      attributes=list(pages.taxonomy(engine).attributes), form=form,
                      outcome=outcome)  # fmt: skip
    response.background = announce(request, outcome.job_id, outcome.images)
    return response


# -- jobs ----------------------------------------------------------------------------------------
@router.get("/jobs")
def jobs_page(request: Request, session: users.SignedIn = Depends(viewer)):
    from pipeline.labels.jobs import list_jobs

    limit = number(request.query_params.get("limit"), 50, 1, 1000, "limit")
    return render(request, session, "jobs.html", title="Jobs",
                  jobs=list_jobs(engine=request.app.state.engine, limit=limit),
                  done=request.query_params.get("done"))  # fmt: skip


@router.post("/jobs/{job_id}/undo")
def undo_form(job_id: int, request: Request, session: users.SignedIn = Depends(moderator)):
    from pipeline.labels.jobs import undo_job

    outcome = undo_job(engine=request.app.state.engine, job_id=job_id, who=who(session))
    done = f"job {job_id} undone by job {outcome.job_id}: {outcome.images} labels put back" + (
        f", {outcome.skipped} skipped (changed since)" if outcome.skipped else ""
    )
    return RedirectResponse("/jobs?" + urlencode({"done": done}), status_code=303,
                            background=announce(request, outcome.job_id, outcome.images))  # fmt: skip


@router.post("/api/jobs/{job_id}/undo")
def undo_api(job_id: int, request: Request, session: users.SignedIn = Depends(moderator)):
    from pipeline.labels.jobs import undo_job

    outcome = undo_job(engine=request.app.state.engine, job_id=job_id, who=who(session))
    return JSONResponse(
        {"job_id": outcome.job_id, "undone": job_id, "changed": outcome.images,
         "skipped": outcome.skipped, "sample": plain(outcome.sample)},
        background=announce(request, outcome.job_id, outcome.images),
    )  # fmt: skip
