"""Reader study web app: sign-in, voting, resume, strict blinding of everything served,
refusal of other readers' ids, path traversal and bad input, and no vote lost on SIGKILL."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import sqlite3
from pathlib import Path

import httpx
import pandas as pd
import pytest
from PIL import Image

from synthmed.reader_study.blinding import png_chunk_types
from synthmed.reader_study.create import create_study
from synthmed.reader_study.demo import make_demo_trees
from synthmed.reader_study.report import write_report
from reader_study_helpers import add_readers, client_for, free_port, start_server

CLASSES = ("brainmriclass", "headctclass")
# nothing of the source may appear in anything served
LEAKS = ["trees_src", "scan_", "sample_", ".jpg", ".png", "brainmriclass", "headctclass",
         "ScannerMaker", "stable diffusion", "synthetic", "is_synthetic", "source"]


@pytest.fixture()
def study(tmp_path) -> Path:
    real, fake = make_demo_trees(tmp_path / "trees_src", per_class=3, classes=CLASSES)
    study = create_study(real, fake, tmp_path / "study.sqlite", size=64, seed=3)
    add_readers(study, "reader.A", "A", "B")
    return study


def _sign_in(client, reader: str, passcode: str = "pass1234"):
    return client.post("/login", data={"reader_id": reader, "passcode": passcode})


def _form(html: str) -> dict[str, str]:
    return {name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)
            for name in ("reader_id", "image", "position")}


def _vote(client, html: str, vote: str, note: str = "", **override):
    return client.post("/vote", data={**_form(html), "vote": vote, "note": note, **override})


def _db_votes(study: Path) -> dict[tuple[str, str], str]:
    with sqlite3.connect(study) as conn:
        rows = conn.execute("SELECT v.reader_id, i.public_id, v.vote FROM votes v JOIN images i "
                            "ON i.id = v.image_id").fetchall()
    return {(r, p): v for r, p, v in rows}


def _truth(study: Path) -> dict[str, int]:
    with sqlite3.connect(study) as conn:
        return dict(conn.execute("SELECT public_id, is_synthetic FROM images"))


def test_vote_resume_and_revote_are_recorded(study):
    client = client_for(study)
    assert client.get("/").status_code == 200
    assert client.get("/study", follow_redirects=False).headers["location"] == "/"
    answer = _sign_in(client, "reader.A")
    assert answer.url.path == "/study/1"
    html = answer.text
    assert 'value="0"' in html and "0 / 12 rated" in html
    votes = {}
    for vote in ("real", "fake", "unclear", "fake"):
        form = _form(html)
        answer = _vote(client, html, vote, note=f"note {vote}")
        votes[form["image"]] = vote
        html = answer.text
    assert answer.url.path == "/study/5" and "4 / 12 rated" in html
    assert client.get("/done").url.path == "/study/5"  # not done yet
    assert {p: v for (r, p), v in _db_votes(study).items() if r == "reader.A"} == votes
    # a new browser (new app = server restart) signs in again and lands on image 5
    again = client_for(study)
    assert _sign_in(again, "reader.A", "wrong-pass").status_code == 403
    assert _sign_in(again, "reader.A").url.path == "/study/5"
    # changing an earlier answer replaces it and logs the old one
    first = again.get("/study/1").text
    assert 'aria-pressed="true" id="vote-real"' in first and "note real" in first
    assert _vote(again, first, "fake", note="changed").url.path == "/study/5"
    assert _db_votes(study)[("reader.A", _form(first)["image"])] == "fake"
    with sqlite3.connect(study) as conn:
        history = conn.execute("SELECT reader_id, vote, note FROM vote_history").fetchall()
    assert history == [("reader.A", "real", "note real")]
    for _ in range(8):
        html = _vote(again, html, "real").text
    assert "All 12 images rated" in html
    assert again.get("/study", follow_redirects=False).headers["location"] == "/done"


def test_served_html_headers_and_images_do_not_betray_the_source(study):
    client = client_for(study)
    served = [client.get("/"), _sign_in(client, "A"), client.get("/static/style.css"),
              client.get("/static/study.js")]
    truth = _truth(study)
    pages, images = {}, {}
    for position in range(1, 13):
        page = client.get(f"/study/{position}")
        public_id = _form(page.text)["image"]
        image = client.get(f"/img/{public_id}")
        served += [page, image]
        pages[position] = (truth[public_id], page.text.replace(public_id, "ID"))
        images[public_id] = image
    redirect = _vote(client, pages[1][1].replace("ID", _form(served[4].text)["image"]), "real")
    served += [redirect, client.get("/done"), client.get("/study", follow_redirects=False)]
    for answer in served:
        text = answer.content.decode("latin-1") + str(answer.url) + str(answer.headers)
        for leak in LEAKS:
            assert leak.lower() not in text.lower(), (leak, str(answer.url))
        for history in answer.history:
            assert not any(leak in history.headers.get("location", "") for leak in LEAKS)
    # the study page is one template: apart from id and position, real == synthetic
    middle = {re.sub(r"\d+", "N", html) for _, html in list(pages.values())[1:-1]}
    assert len(middle) == 1
    assert {source for source, _ in list(pages.values())[1:-1]} == {0, 1}
    # image answers: same headers (but length), same PNG layout, no file traces
    header_sets = {tuple(sorted((k, v) for k, v in r.headers.items() if k != "content-length"))
                   for r in images.values()}
    assert len(header_sets) == 1
    headers = dict(next(iter(header_sets)))
    assert headers["content-type"] == "image/png"
    assert not {"etag", "last-modified", "content-disposition", "server"} & set(headers)
    assert all(len(public_id) == 24 for public_id in images)
    for answer in images.values():
        data = answer.content
        assert png_chunk_types(data) == ["IHDR", "IDAT", "IEND"]
        assert Image.open(io.BytesIO(data)).size == (64, 64)
    assert len({r.content[8:33] for r in images.values()}) == 1  # identical IHDR


def test_other_readers_ids_and_bad_input_are_refused(study):
    a, b = client_for(study), client_for(study)
    html_a = _sign_in(a, "A").text
    html_b = _sign_in(b, "B").text
    public_id = _form(html_a)["image"]
    assert _vote(a, html_a, "real", note="A's private note").status_code == 200
    # B forges A's reader id: refused, nothing stored for A or B
    forged = _vote(b, html_b, "fake", reader_id="A")
    assert forged.status_code == 403
    assert _db_votes(study) == {("A", public_id): "real"}
    # B never sees A's answer or note on the same image
    order_b = [_form(b.get(f"/study/{p}").text)["image"] for p in range(1, 13)]
    page = b.get(f"/study/{order_b.index(public_id) + 1}").text
    assert "A's private note" not in page and 'aria-pressed="true"' not in page
    # without a session nothing is served or accepted
    anonymous = client_for(study)
    assert anonymous.get(f"/img/{public_id}").status_code == 403
    assert _vote(anonymous, html_a, "fake").status_code == 403
    for bad, status in [({"vote": "maybe"}, 400), ({"note": "x" * 1001}, 400),
                        ({"image": "../../etc/passwd"}, 400), ({"position": "-1"}, 400),
                        ({"image": "A" * 24}, 404), ({"reader_id": ""}, 403)]:
        data = {**_form(html_b), "vote": "fake", "note": "", **bad}
        assert b.post("/vote", data=data).status_code == status, bad
    assert _db_votes(study) == {("A", public_id): "real"}
    assert b.post("/login", data={"reader_id": "../etc", "passcode": "pass1234"}).status_code \
        == 400
    # readers the owner did not create cannot sign in; with open registration they can, but
    # only with a passcode of 8 or more characters
    assert b.post("/login", data={"reader_id": "C", "passcode": "pass1234"}).status_code \
        == 403
    opened = client_for(study, open_registration=True)
    assert opened.post("/login", data={"reader_id": "C", "passcode": "abcd123"}).status_code \
        == 400
    assert opened.post("/login", data={"reader_id": "C", "passcode": "abcd1234"}).url.path \
        == "/study/1"
    cross = b.post("/vote", data={**_form(html_b), "vote": "fake"},
                   headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    assert _db_votes(study) == {("A", public_id): "real"}


TRAVERSALS = [
    "/img/..%2F..%2F..%2Fetc%2Fpasswd", "/img/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/..%2F..%2Fdb.py", "/static/%2e%2e/app.py", "/study/..%2F..%2Fetc%2Fpasswd",
    "/study/0", "/study/13", "/img/" + "A" * 24, "/img/" + "A" * 24 + "%2F..%2Fstudy.sqlite",
    "/study.sqlite", "/docs", "/openapi.json"]


def test_path_traversal_and_unknown_paths_get_404(study):
    client = client_for(study)
    _sign_in(client, "A")
    for path in TRAVERSALS:
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert b"root:" not in answer.content and b"import" not in answer.content
        assert b"SQLite" not in answer.content


def test_sigkill_mid_study_loses_no_committed_vote(study):
    port = free_port()
    proc = start_server(study, port)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True)
        html = _sign_in(client, "A").text
        cast = {}
        for i in range(5):
            form = _form(html)
            answer = _vote(client, html, ("real", "fake", "unclear")[i % 3])
            assert answer.status_code == 200
            cast[form["image"]] = ("real", "fake", "unclear")[i % 3]
            html = answer.text
        # a raw request with an unnormalised path never reaches the file system
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"GET /img/../../../../etc/passwd HTTP/1.1\r\n"
                        + f"Host: 127.0.0.1:{port}\r\n\r\n".encode())
            reply = raw.recv(4096)
        assert reply.split(b" ")[1] == b"404" and b"root:" not in reply
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {p: v for (r, p), v in _db_votes(study).items()} == cast
    proc = start_server(study, port)
    try:
        assert client.get("/study").url.path == "/study/6"  # the cookie still signs A in
        assert "5 / 12 rated" in client.get("/study").text
        # the report reads the study while the server holds it open (WAL)
        out = write_report(study, study.parent / "report")
        assert len(pd.read_csv(out / "votes.csv")) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=10)
