"""What the workbench's requests say (filters, numbers, dates, job forms) and how its pages are
drawn (Jinja2, autoescaped: captions and names are text, never markup)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from pipeline.errors import CatalogueError
from pipeline.labels.review import ReviewFilter
from pipeline.labels.taxonomy import Taxonomy
from pipeline.web.pages import ProductPlace
from pipeline.web.users import SignedIn

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
FILTER_FIELDS = ("account", "value", "predicted", "needs_review", "since", "until")
RELABEL_FIELDS = ("kind", "attribute", "to", "from", "account", "value", "predicted", "since",
                  "until", "shortcodes", "note", "confirm")  # fmt: skip


class RequestRefused(CatalogueError, ValueError):
    """A request the workbench cannot use (a filter, a value, a file); said to the person."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def render(
    request: Request, session: SignedIn | None, name: str, status: int = 200, **context: Any
) -> HTMLResponse:
    context.update(me=session.person if session else None,
                   csrf=session.csrf_token if session else "")  # fmt: skip
    return templates.TemplateResponse(request, name, context, status_code=status)


def local_path(target: str) -> str:
    """A path of this site to go to after signing in, never another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/review"
    return target


def number(text: str | None, default: int, low: int, high: int, name: str) -> int:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestRefused(f"{name} '{text[:20]}' is not a whole number") from None
    if not low <= value <= high:
        raise RequestRefused(f"{name} must be between {low} and {high}")
    return value


def a_date(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RequestRefused(f"{name} '{text[:20]}' is not a date: write YYYY-MM-DD") from None


def product_place(text: str | None) -> ProductPlace | None:
    """Where a page of the catalogue starts: the `after` of its Next link (`place_text`)."""
    if not text:
        return None
    parts = text.rsplit(",", 2)
    try:
        taken_at, shortcode, position = datetime.fromisoformat(parts[0]), parts[1], int(parts[2])
        if taken_at.tzinfo is None or not 0 < len(shortcode) <= 64 or position < 0:
            raise ValueError
    except (ValueError, IndexError):
        raise RequestRefused(
            f"after '{text[:60]}' is not a place in the catalogue: follow the Next link, or "
            "leave it out for the first page"
        ) from None
    return ProductPlace(taken_at, shortcode, position)


def place_text(place: ProductPlace) -> str:
    return f"{place.taken_at.isoformat()},{place.shortcode},{place.position}"


def counted(total: int, more: bool) -> str:
    """A count as a page shows it: `1,234`, or `1,000+` where the count stopped at its cap."""
    return f"{total:,}{'+' if more else ''}"


def attribute_of(taxonomy: Taxonomy, name: str | None) -> str:
    attributes = list(taxonomy.attributes)
    if not name:
        return "category" if "category" in attributes else attributes[0]
    if name not in attributes:
        raise RequestRefused(f"no attribute '{name[:40]}': one of {', '.join(attributes)}")
    return name


def review_filter(params) -> ReviewFilter:
    review = params.get("needs_review") or ""
    if review not in ("", "yes", "no"):
        raise RequestRefused("needs_review is yes, no or empty")
    return ReviewFilter(
        account=params.get("account") or None,
        value=params.get("value") or None,
        predicted=params.get("predicted") or None,
        needs_review={"yes": True, "no": False}.get(review),
        since=a_date(params.get("since"), "since"),
        until=a_date(params.get("until"), "until"),
    )


def filter_form(params) -> dict[str, str]:
    return {name: params.get(name) or "" for name in FILTER_FIELDS}


def filter_query(params, attribute: str) -> str:
    given = {name: params.get(name) for name in FILTER_FIELDS if params.get(name)}
    return urlencode({"attribute": attribute, **given})


def relabel_form(params) -> dict[str, str]:
    form = {name: str(params.get(name) or "").strip() for name in RELABEL_FIELDS}
    if not form["shortcodes"] and hasattr(params, "getlist"):
        form["shortcodes"] = " ".join(params.getlist("shortcode"))
    form["kind"] = form["kind"] or "move"
    form["attribute"] = form["attribute"] or "category"
    return form


def selection(form: dict[str, str]):
    from pipeline.labels.jobs import Selection

    return Selection(
        account=form["account"] or None,
        value=[form["value"]] if form["value"] else [],
        predicted=[form["predicted"]] if form["predicted"] else [],
        shortcodes=form["shortcodes"].replace(",", " ").split(),
        since=a_date(form["since"], "since"),
        until=a_date(form["until"], "until"),
    )


def plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(rows, default=str))
