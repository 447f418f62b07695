"""The pages that only read: thumbnails, the catalogue (and its label CSV), search by picture."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pipeline.web import pages, users
from pipeline.web.auth import viewer
from pipeline.web.forms import (
    RequestRefused,
    attribute_of,
    counted,
    filter_form,
    filter_query,
    number,
    place_text,
    product_place,
    render,
    review_filter,
)

PAGE = 100
SEARCH_MAX_BYTES = 10 * 1024 * 1024  # a photo to search with: a phone's photo fits

router = APIRouter()


@router.get("/thumbs/{image_id}.jpg")
def thumbnail(image_id: int, request: Request, size: str = "thumb",
              session: users.SignedIn = Depends(viewer)):  # fmt: skip
    """A catalogued picture, small: by its id, never by a key or path the request names."""
    made = request.app.state.thumbnails.get(image_id, size)
    etag = f'"{made.etag}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(made.data, media_type="image/jpeg", headers=headers)


@router.get("/catalogue")
def catalogue_page(request: Request, session: users.SignedIn = Depends(viewer)):
    """A page of the products, newest post first; its Next link carries the last product's place
    (`after`), so a page deep in a million products reads as few rows as the first."""
    engine, params = request.app.state.engine, request.query_params
    taxonomy = pages.taxonomy(engine)
    attribute = attribute_of(taxonomy, params.get("attribute"))
    found = pages.products(engine, attribute=attribute, filters=review_filter(params), limit=PAGE,
                           after=product_place(params.get("after")),
                           count_cap=request.app.state.count_cap)  # fmt: skip
    query = filter_query(params, attribute)
    after = urlencode({"after": place_text(found.next)}) if found.next else None
    return render(request, session, "catalogue.html", title="Catalogue", rows=found.rows,
                  total=counted(found.total, found.more), after=after, page=PAGE,
                  attribute=attribute, attributes=list(taxonomy.attributes),
                  filters=filter_form(params), query=query)  # fmt: skip


@router.get("/catalogue/labels.csv")
def catalogue_csv(request: Request, session: users.SignedIn = Depends(viewer)):
    """Every product the page's filters select (not a page of them), as the label CSV to fill in
    and import, streamed as it is read."""
    engine, params = request.app.state.engine, request.query_params
    attribute = attribute_of(pages.taxonomy(engine), params.get("attribute"))
    pieces = pages.products_csv(engine, attribute=attribute, filters=review_filter(params))
    return StreamingResponse(
        pieces, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="labels.csv"'},
    )  # fmt: skip


@router.get("/search")
def search_page(request: Request, session: users.SignedIn = Depends(viewer)):
    return render(request, session, "search.html", title="Search by picture", found=None)


@router.post("/search")
async def search(request: Request, session: users.SignedIn = Depends(viewer)):
    found = await similar(request)
    return render(request, session, "search.html", title="Search by picture", found=found)


@router.post("/api/similar")
async def similar(request: Request, session: users.SignedIn = Depends(viewer)) -> dict[str, Any]:
    """The products nearest to a photo (multipart field `photo`, at most 10 MiB; `limit`), with
    their duplicate listings: the similar-items search of `pipeline.similar.search`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > SEARCH_MAX_BYTES + 64 * 1024:
        raise RequestRefused(f"the photo is over {SEARCH_MAX_BYTES:,} bytes", 413)
    form = await request.form(max_files=1, max_fields=5)
    photo = form.get("photo")
    if photo is None or isinstance(photo, str):
        raise RequestRefused("send the photo as the multipart field 'photo'")
    data = await photo.read(SEARCH_MAX_BYTES + 1)
    if len(data) > SEARCH_MAX_BYTES:
        raise RequestRefused(f"the photo is over {SEARCH_MAX_BYTES:,} bytes", 413)
    limit = number(str(form.get("limit") or ""), 12, 1, 100, "limit")
    return await run_in_threadpool(_nearest, request, data, photo.filename or "photo", limit)


def _nearest(request: Request, data: bytes, name: str, limit: int) -> dict[str, Any]:
    from pipeline.similar.search import embedding_version, nearest, photo_query

    engine = request.app.state.engine
    version = embedding_version(engine)
    with tempfile.TemporaryDirectory(prefix="catalogue-search-") as folder:
        path = Path(folder) / "photo"
        path.write_bytes(data)
        query = photo_query(engine, settings=request.app.state.settings, path=path)
    neighbours = nearest(engine, version, query, limit=limit)
    groups = pages.duplicate_listings(engine, [n.duplicate_group for n in neighbours])
    return {
        "query": query.description.replace("photo", name, 1),
        "model_version": version.version,
        "neighbours": [
            {"image_id": n.image_id, "shortcode": n.shortcode, "position": n.position,
             "account": n.account, "category": n.category, "colour": n.colour,
             "distance": round(n.distance, 4), "duplicates": groups.get(n.duplicate_group, [])}
            for n in neighbours
        ],
    }  # fmt: skip
