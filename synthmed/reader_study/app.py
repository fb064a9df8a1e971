"""``serve``: the FastAPI web app readers vote in.

Routes (nothing else exists; no route maps a request path onto the file system):

    GET  /                  sign-in page (or straight to the study when signed in)
    POST /login             reader id + passcode -> session cookie
    POST /logout            forget this browser's session
    GET  /study             jump to this reader's first unanswered image
    GET  /study/{n}         image n (1-based) in this reader's own order
    POST /vote              reader_id, image, position, vote, note -> committed, next image
    GET  /done              all images answered
    GET  /background        synthetic-only studies: specialty, years, familiar with
    POST /background        generative AI, asked once before the first image
    GET  /img/{public_id}   blinded PNG bytes from the study file (signed-in readers only)
    GET  /static/style.css, /static/study.js, /healthz, /favicon.ico (empty)

Identity: the session cookie holds a random token whose hash is stored with the reader id;
every request acts for that reader only. A vote whose ``reader_id`` field names anyone else
is refused with 403, so no reader can see or alter another reader's answers. Readers are
created by the study owner (``reader-study create --readers`` / ``add-readers``, each with a
generated passcode); readers who pick their own id and passcode on the first visit exist
only where the server runs with ``open_registration``.

Guards, in the order a request meets them:

* ``Host`` must be one of the names the server was bound to (``hosts.py``; Starlette's
  ``TrustedHostMiddleware``), else 400: a DNS-rebinding page under its own name gets nothing.
* a POST whose ``Origin`` is not ``http(s)://<allowed name>:<served port>`` gets 403.
* sign-in: after 5 wrong passcodes for a reader (10 from one client address) every attempt
  is answered 429 with ``Retry-After`` for a delay that doubles (``throttle.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Sequence
from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from . import db, pages
from .background import background_of, make_background, save_background
from .assets import STUDY_JS, STYLE_CSS
from .hosts import allowed_host_names, allowed_origins, origin_allowed
from .throttle import LoginThrottle

COOKIE = "rs_session"
READER_ID_RE = re.compile(db.READER_ID_PATTERN)
PUBLIC_ID_RE = re.compile(r"[A-Za-z0-9_-]{24}")
POSITION_RE = re.compile(r"[0-9]{1,6}")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # same-origin (not no-referrer): with no-referrer the browser sends "Origin: null" on
    # form posts and the same-origin check below could not tell them from cross-site ones
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'self'; "
                                "script-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def make_app(study_path: str | Path, host: str = "127.0.0.1", port: int = 8765,
             allowed_hosts: Sequence[str] = (), open_registration: bool = False,
             throttle: LoginThrottle | None = None) -> FastAPI:
    """Build the app for one study file (checked now, so a bad path fails before serving).

    ``host`` / ``port``: where the server is bound; with ``allowed_hosts`` (extra names, see
    ``hosts.py``) they decide which ``Host`` and ``Origin`` headers are answered.
    ``open_registration``: unknown reader ids may sign up with a passcode of their own choice
    (at least ``db.MIN_PASSCODE`` characters); off, only readers the owner created sign in.
    ``throttle``: the failed-sign-in limiter (default ``LoginThrottle()``).
    """
    study_path = Path(study_path)
    with db.connection(study_path) as conn:
        size = int(db.read_meta(conn)["size"])
        total = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        study_mode = db.study_mode(conn)
    labels = pages.labels_for(study_mode)
    asks_background = study_mode == "synthetic-only"
    names = allowed_host_names(host, allowed_hosts)
    origins = allowed_origins(host, port, allowed_hosts)
    throttle = throttle or LoginThrottle()

    app = FastAPI(title="Reader study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        # cross-site form posts are refused: the Origin must be an allowed name and the served
        # port, never just "whatever Host says" (a DNS-rebinding page chooses both)
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and not origin_allowed(origin,
                                                                                   origins):
            return _with_security(PlainTextResponse("cross-site request refused", 403))
        return _with_security(await call_next(request))

    # added last = outermost: a foreign Host is answered 400 before anything else runs
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=names, www_redirect=False)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = "Page not found." if exc.status_code == 404 else "Request refused."
        return _html(pages.error_page(message), exc.status_code)

    def reader_of(request: Request, conn) -> str | None:
        return db.reader_for_token(conn, request.cookies.get(COOKIE))

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/style.css")
    def style() -> Response:
        return Response(STYLE_CSS, media_type="text/css")

    @app.get("/static/study.js")
    def script() -> Response:
        return Response(STUDY_JS, media_type="text/javascript")

    def login_page(error: str | None = None, reader_id: str = "", status: int = 200):
        return _html(pages.login_page(total, error, reader_id, open_registration, study_mode),
                     status)

    def needs_background(conn, reader: str) -> bool:
        return asks_background and background_of(conn, reader) is None

    @app.get("/background")
    def background_form(request: Request):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _redirect("/")
            if not asks_background:
                return _redirect("/study")
        return _html(pages.background_page(reader))

    @app.post("/background")
    def background_save(request: Request, specialty: Annotated[str, Form()] = "",
                        years: Annotated[str, Form()] = "", genai: Annotated[str, Form()] = ""):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _html(pages.error_page("Please sign in first."), 403)
            if not asks_background:
                return _html(pages.error_page("This study does not ask for a background."),
                             404)
            if background_of(conn, reader) is not None:  # asked once; the owner's stays
                return _redirect("/study")
            try:
                background = make_background(specialty, years[:8], genai, given_by="reader")
            except ValueError as err:
                return _html(pages.background_page(reader, str(err).capitalize() + ".",
                                                   specialty[:200], years[:8], genai[:8]), 400)
            save_background(conn, reader, background)
        return _redirect("/study")

    @app.get("/")
    def index(request: Request):
        with db.connection(study_path) as conn:
            if reader_of(request, conn):
                return _redirect("/study")
        return login_page()

    @app.post("/login")
    def login(request: Request, reader_id: Annotated[str, Form()] = "",
              passcode: Annotated[str, Form()] = ""):
        reader_id = reader_id.strip()
        client = request.client.host if request.client else "unknown"
        if not READER_ID_RE.fullmatch(reader_id):
            return login_page("The reader ID may use letters, digits, dot, dash and underscore "
                              "(at most 32).", "", 400)
        if not 1 <= len(passcode) <= db.MAX_PASSCODE:
            return login_page(f"The passcode has at most {db.MAX_PASSCODE} characters.",
                              reader_id, 400)
        wait = throttle.retry_after(reader_id, client)
        if wait:  # locked: refused without even checking the passcode
            return _locked(login_page(_wait_message(wait), reader_id, 429), wait)
        with db.connection(study_path) as conn:
            register = open_registration and not db.reader_exists(conn, reader_id)
            if register and len(passcode) < db.MIN_PASSCODE:
                return login_page(f"Choose a passcode of at least {db.MIN_PASSCODE} "
                                  "characters.", reader_id, 400)
            token = db.sign_in(conn, reader_id, passcode, register=register)
        if token is None:
            wait = throttle.failed(reader_id, client)
            message = "Unknown reader ID or wrong passcode."
            if wait:
                message += " " + _wait_message(wait)
            return login_page(message, reader_id, 403)
        throttle.succeeded(reader_id)
        response = _redirect("/study")
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                            max_age=60 * 60 * 24 * 60)
        return response

    @app.post("/logout")
    def logout(request: Request):
        with db.connection(study_path) as conn:
            db.sign_out(conn, request.cookies.get(COOKIE))
        response = _redirect("/")
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/study")
    def study_next(request: Request):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _redirect("/")
            if needs_background(conn, reader):
                return _redirect("/background")
            return _redirect(_next_url(conn, reader, 0))

    @app.get("/study/{position}")
    def study_item(position: str, request: Request):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _redirect("/")
            if needs_background(conn, reader):
                return _redirect("/background")
            order = db.reader_order(conn, reader)
            if not POSITION_RE.fullmatch(position) or not 1 <= int(position) <= len(order):
                return _html(pages.error_page("Page not found."), 404)
            pos = int(position)
            mine = db.votes_of(conn, reader)
            item = order[pos - 1]
            own = mine.get(item["id"])
            return _html(pages.study_page(
                reader, pos, len(order), len(mine), item["public_id"], size,
                own["vote"] if own else None, own["note"] if own else "", labels))

    @app.post("/vote")
    def cast(request: Request, reader_id: Annotated[str, Form()] = "",
             image: Annotated[str, Form()] = "", position: Annotated[str, Form()] = "",
             vote: Annotated[str, Form()] = "", note: Annotated[str, Form()] = ""):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _html(pages.error_page("Please sign in first."), 403)
            if reader_id != reader:
                return _html(pages.error_page("This vote names another reader; it was not "
                                              "saved."), 403)
            if needs_background(conn, reader):
                return _html(pages.error_page("Please tell us about your background first."),
                             403)
            if vote not in db.VOTES:
                return _html(pages.error_page(
                    f"Unknown answer; use {', '.join(labels.values())}."), 400)
            note = note.strip()
            if len(note) > pages.NOTE_MAX:
                return _html(pages.error_page(f"The note is longer than {pages.NOTE_MAX} "
                                              "characters; please shorten it."), 400)
            if not PUBLIC_ID_RE.fullmatch(image) or not POSITION_RE.fullmatch(position):
                return _html(pages.error_page("Malformed request."), 400)
            if not 1 <= int(position) <= total:  # checked before anything is stored
                return _html(pages.error_page(f"Position {position} is not in 1..{total}; "
                                              "the answer was not saved."), 400)
            image_id = db.image_id_for(conn, image)
            if image_id is None:
                return _html(pages.error_page("Unknown image."), 404)
            db.cast_vote(conn, reader, image_id, vote, note)
            return _redirect(_next_url(conn, reader, int(position)))

    @app.get("/done")
    def done(request: Request):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _redirect("/")
            if len(db.votes_of(conn, reader)) < total:  # not done yet: back to the next one
                return _redirect(_next_url(conn, reader, 0))
        return _html(pages.done_page(reader, total))

    @app.get("/img/{public_id}")
    def image_bytes(public_id: str, request: Request):
        with db.connection(study_path) as conn:
            if reader_of(request, conn) is None:
                return PlainTextResponse("sign in first", 403)
            png = db.image_png(conn, public_id) if PUBLIC_ID_RE.fullmatch(public_id) else None
        if png is None:
            return PlainTextResponse("not found", 404)
        # bytes from the database only: no file name, no Last-Modified, no ETag
        return Response(png, media_type="image/png")

    return app


def _wait_message(seconds: int) -> str:
    return (f"Too many failed sign-ins for this reader ID or from this address: try again in "
            f"{seconds} seconds.")


def _locked(response: Response, seconds: int) -> Response:
    response.headers["Retry-After"] = str(seconds)
    return response


def _with_security(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    return response


def _next_url(conn, reader: str, after: int) -> str:
    """URL of the first unanswered image after position ``after`` (wrapping), or /done."""
    order = db.reader_order(conn, reader)
    answered = db.votes_of(conn, reader)
    positions = list(range(after, len(order))) + list(range(0, after))
    for index in positions:
        if order[index]["id"] not in answered:
            return f"/study/{index + 1}"
    return "/done"


def serve(study_path: str | Path, host: str = "127.0.0.1", port: int = 8765,
          allowed_hosts: Sequence[str] = (), open_registration: bool = False) -> None:
    """Run the app under uvicorn until interrupted."""
    import uvicorn

    app = make_app(study_path, host=host, port=port, allowed_hosts=allowed_hosts,
                   open_registration=open_registration)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False,
                access_log=False)
