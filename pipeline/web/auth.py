"""Who is asking, and may they: sessions, roles, CSRF; signing in and out; managing people.

`viewer`, `moderator` and `admin` are the dependencies a route names: each needs a live session
whose role includes that one's rights, and for a state-changing request the session's CSRF token
(form field `csrf_token`, or header `X-CSRF-Token`). The sign-in form has a token of its own (a
cookie and a form field that must match), since there is no session yet.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.errors import CatalogueError
from pipeline.labels.history import Who
from pipeline.web import users
from pipeline.web.forms import RequestRefused, local_path, render

SESSION_COOKIE = "catalogue_session"
LOGIN_COOKIE = "catalogue_login_csrf"
MAX_BODY = 10 * 1024 * 1024 + 64 * 1024  # the largest request read (a photo to search with)

router = APIRouter()


class NotSignedIn(CatalogueError, PermissionError):
    """No session, or it expired."""


class Forbidden(CatalogueError, PermissionError):
    """The session's role does not allow this, or the CSRF token is missing or wrong."""


def signed(request: Request) -> users.SignedIn:
    found = current(request)
    if found is None:
        raise NotSignedIn("sign in first")
    return found


def current(request: Request) -> users.SignedIn | None:
    return users.signed_in(
        engine=request.app.state.engine, token=request.cookies.get(SESSION_COOKIE)
    )


def acting(role: str):
    async def allowed(request: Request) -> users.SignedIn:
        session = await run_in_threadpool(signed, request)
        if request.method not in ("GET", "HEAD"):
            await check_csrf(request, session.csrf_token)
        if not session.person.may(role):
            raise Forbidden(
                f"a {role} may do this; {session.person.name} is a {session.person.role}"
            )
        return session

    return allowed


viewer, moderator, admin = acting("viewer"), acting("moderator"), acting("admin")


def who(session: users.SignedIn) -> Who:
    """The identity every label and job of this session records."""
    return Who(name=session.person.name, origin="web")


async def check_csrf(request: Request, expected: str) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestRefused(f"the request is over {MAX_BODY:,} bytes", 413)
    sent = request.headers.get("x-csrf-token")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get("csrf_token")
    if not isinstance(sent, str) or not sent or not hmac.compare_digest(sent, expected):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    settings = request.app.state.settings
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
        secure=settings.web_secure_cookies or request.url.scheme == "https",
    )  # fmt: skip


# -- signing in and out --------------------------------------------------------------------------
@router.get("/login")
def login_page(request: Request, next: str = "/review"):
    token = secrets.token_urlsafe(24)
    response = render(request, None, "login.html", title="Sign in", login_csrf=token,
                      next=local_path(next))  # fmt: skip
    set_cookie(response, request, LOGIN_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request):
    settings, engine = request.app.state.settings, request.app.state.engine
    form = await request.form()
    sent, kept = str(form.get("csrf_token", "")), request.cookies.get(LOGIN_COOKIE, "")
    if not sent or not kept or not hmac.compare_digest(sent, kept):
        raise Forbidden("the sign-in form expired: reload the page and sign in again")
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    target = local_path(str(form.get("next", "")))
    try:
        person = await run_in_threadpool(
            users.authenticate, engine=engine, name=name, password=password,
            client=request.client.host if request.client else None,
            max_failures=settings.web_login_attempts,
        )  # fmt: skip
    except users.LoginRefused as exc:
        status = 429 if isinstance(exc, users.LoginThrottled) else 401
        return render(request, None, "login.html", status, title="Sign in", error=str(exc),
                      login_csrf=kept, next=target)  # fmt: skip
    token = users.start_session(engine=engine, person=person, hours=settings.web_session_hours)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request, SESSION_COOKIE, token,
               max_age=int(settings.web_session_hours * 3600))  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, session: users.SignedIn = Depends(viewer)):
    users.end_session(engine=request.app.state.engine, token=request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/api/session")
def session_info(session: users.SignedIn = Depends(viewer)):
    """For other services: who the cookie is, and the CSRF token their POSTs carry."""
    return {"name": session.person.name, "role": session.person.role,
            "csrf_token": session.csrf_token,
            "expires_at": session.expires_at.isoformat()}  # fmt: skip


# -- people --------------------------------------------------------------------------------------
@router.get("/users")
def users_page(request: Request, session: users.SignedIn = Depends(admin)):
    return render(request, session, "users.html", title="People",
                  people=users.list_people(engine=request.app.state.engine),
                  done=request.query_params.get("done"))  # fmt: skip


@router.post("/users")
async def users_change(request: Request, session: users.SignedIn = Depends(admin)):
    engine = request.app.state.engine
    form = await request.form()
    action, name = str(form.get("action", "")), str(form.get("name", "")).strip()
    password = str(form.get("password", ""))
    if action == "add":
        await run_in_threadpool(users.add_person, engine=engine, name=name,
                                role=str(form.get("role", "")), password=password)  # fmt: skip
    elif action == "disable":
        if name.lower() == session.person.name.lower():
            raise RequestRefused("you cannot disable yourself: ask another admin")
        users.disable_person(engine=engine, name=name)
    elif action == "reset-password":
        await run_in_threadpool(users.reset_password, engine=engine, name=name,
                                password=password)  # fmt: skip
    else:
        raise RequestRefused("action is one of add, disable, reset-password")
    return RedirectResponse("/users?" + urlencode({"done": f"{action}: {name}"}),
                            status_code=303)  # fmt: skip
