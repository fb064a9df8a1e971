"""``serve``: the FastAPI web app readers vote in.

Routes (nothing else exists; no route maps a request path onto the file system):

    GET  /                  sign-in page (or straight to the study when signed in)
    POST /login             reader id + passcode -> session cookie
    POST /logout            forget this browser's session
    GET  /study             jump to this reader's first unanswered image
    GET  /study/{n}         image n (1-based) in this reader's own order
    POST /vote              reader_id, image, position, vote, note -> committed, next image
    GET  /done              all images answered
    GET  /img/{public_id}   blinded PNG bytes from the study file (signed-in readers only)
    GET  /static/style.css, /static/study.js, /healthz, /favicon.ico (empty)

Identity: the session cookie holds a random token whose hash is stored with the reader id;
every request acts for that reader only. A vote whose ``reader_id`` field names anyone else
is refused with 403, so no reader can see or alter another reader's answers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import db, pages
from .assets import STUDY_JS, STYLE_CSS

COOKIE = "rs_session"
READER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
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


def make_app(study_path: str | Path) -> FastAPI:
    """Build the app for one study file (checked now, so a bad path fails before serving)."""
    study_path = Path(study_path)
    with db.connection(study_path) as conn:
        size = int(db.read_meta(conn)["size"])
        total = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    app = FastAPI(title="Reader study", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        # cross-site form posts are refused: the browser's Origin must be this very host
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None:
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                return _with_security(PlainTextResponse("cross-site request refused", 403))
        return _with_security(await call_next(request))

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

    @app.get("/")
    def index(request: Request):
        with db.connection(study_path) as conn:
            if reader_of(request, conn):
                return _redirect("/study")
        return _html(pages.login_page(total))

    @app.post("/login")
    def login(reader_id: Annotated[str, Form()] = "", passcode: Annotated[str, Form()] = ""):
        reader_id = reader_id.strip()
        if not READER_ID_RE.fullmatch(reader_id):
            return _html(pages.login_page(total, "The reader ID may use letters, digits, dot, "
                                          "dash and underscore (at most 32).", ""), 400)
        if not 4 <= len(passcode) <= 128:
            return _html(pages.login_page(total, "The passcode needs 4 to 128 characters.",
                                          reader_id), 400)
        with db.connection(study_path) as conn:
            token = db.sign_in(conn, reader_id, passcode)
        if token is None:
            return _html(pages.login_page(total, f"Wrong passcode for reader {reader_id}.",
                                          reader_id), 403)
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
            return _redirect(_next_url(conn, reader, 0))

    @app.get("/study/{position}")
    def study_item(position: str, request: Request):
        with db.connection(study_path) as conn:
            reader = reader_of(request, conn)
            if reader is None:
                return _redirect("/")
            order = db.reader_order(conn, reader)
            if not POSITION_RE.fullmatch(position) or not 1 <= int(position) <= len(order):
                return _html(pages.error_page("Page not found."), 404)
            pos = int(position)
            mine = db.votes_of(conn, reader)
            item = order[pos - 1]
            own = mine.get(item["id"])
            return _html(pages.study_page(
                reader, pos, len(order), len(mine), item["public_id"], size,
                own["vote"] if own else None, own["note"] if own else ""))

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
            if vote not in db.VOTES:
                return _html(pages.error_page("Unknown answer; use Real, Fake or Unclear."), 400)
            note = note.strip()
            if len(note) > pages.NOTE_MAX:
                return _html(pages.error_page(f"The note is longer than {pages.NOTE_MAX} "
                                              "characters; please shorten it."), 400)
            if not PUBLIC_ID_RE.fullmatch(image) or not POSITION_RE.fullmatch(position):
                return _html(pages.error_page("Malformed request."), 400)
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


def serve(study_path: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the app under uvicorn until interrupted."""
    import uvicorn

    app = make_app(study_path)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False,
                access_log=False)
