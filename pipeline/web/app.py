"""The workbench's application: its state, its security headers, how refusals are said, and its
pages (`auth`: signing in, people; `labelling`: review, picture, relabel, jobs; `browse`:
thumbnails, catalogue, search by picture).

Every state-changing request needs a session whose role allows it and the session's CSRF token;
every label is written through `pipeline.labels` as `Who(name=<the signed-in person>,
origin="web")`. Pages carry a Content-Security-Policy that runs only the workbench's own script.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from pipeline.config import Settings
from pipeline.errors import CatalogueError
from pipeline.labels.review import COUNT_CAP
from pipeline.storage import ObjectStore
from pipeline.web import auth, browse, labelling
from pipeline.web.auth import Forbidden, NotSignedIn
from pipeline.web.forms import render
from pipeline.web.thumbnails import PictureNotFound, ThumbnailCache

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(
    settings: Settings, *, engine: Engine | None = None, store: ObjectStore | None = None,
    count_cap: int = COUNT_CAP,
) -> FastAPI:  # fmt: skip
    """The workbench; its pages count the review queue and the catalogue up to `count_cap`
    ("1,000+ left"), so a page costs the same at a million pictures as at a thousand."""
    from pipeline.db import get_engine

    engine = engine or get_engine(settings.database_url)
    store = store or ObjectStore.for_images(settings)
    app = FastAPI(title="Catalogue workbench", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.engine = settings, engine
    app.state.count_cap = count_cap
    app.state.thumbnails = ThumbnailCache(engine=engine, store=store)
    app.mount(
        "/static", StaticFiles(directory=Path(__file__).resolve().parent / "static"), "static"
    )
    for pages in (auth, labelling, browse):
        app.include_router(pages.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn):
        if request.method == "GET" and not request.url.path.startswith(("/api/", "/thumbs/")):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
        return JSONResponse({"error": str(exc)}, status_code=401)

    @app.exception_handler(CatalogueError)
    async def refused(request: Request, exc: CatalogueError):
        """A refusal in one line: JSON for the API and the grid's script, a page otherwise."""
        status = getattr(exc, "status", 400)
        if isinstance(exc, Forbidden):
            status = 403
        elif isinstance(exc, PictureNotFound):
            status = 404
        if request.url.path.startswith("/api/") or request.headers.get("x-csrf-token"):
            return JSONResponse({"error": str(exc)}, status_code=status)
        return render(request, auth.current(request), "error.html", status, title="Refused",
                      error=str(exc))  # fmt: skip

    return app
