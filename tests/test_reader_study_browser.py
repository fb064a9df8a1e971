"""Reader study end to end in headless Chromium: two readers vote on a 10-image study by
clicks and keys, one resumes after the server is SIGKILLed and restarted, and the report's
numbers equal what was clicked. A second test reaches the server under a foreign host name
(DNS rebinding, by Chromium's host resolver rules) and guesses passcodes until locked out.

Needs the Debian packages ``chromium`` and ``chromium-driver``; skipped without them.
Set READER_STUDY_SCREENSHOT=path.png to keep a copy of the page screenshot.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from synthmed.reader_study.cli import main
from synthmed.reader_study.create import create_study
from synthmed.reader_study.demo import make_demo_trees

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FUR_NOTE = "Fur-like texture near the ventricles; grey-white border unusually crisp"
LEAKS = ["trees_src", "scan_", "sample_", ".jpg", ".png", "MRI", "CT/", "synthetic"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian packages chromium and chromium-driver "
                              "(/usr/bin/chromium, /usr/bin/chromedriver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from reader_study_helpers import add_readers, free_port, start_server

ATTACKER = "attacker.example"


def _chromium(profile: Path, *extra_flags: str):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1000,1000",
                 f"--user-data-dir={profile}", *extra_flags):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(20)
    return browser


@pytest.fixture()
def driver(tmp_path):
    browser = _chromium(tmp_path / "chrome-profile")
    yield browser
    browser.quit()


@pytest.fixture()
def rebinding_driver(tmp_path):
    """Chromium in which attacker.example resolves to 127.0.0.1, as after a DNS rebinding."""
    browser = _chromium(tmp_path / "chrome-profile-rebind",
                        f"--host-resolver-rules=MAP {ATTACKER} 127.0.0.1")
    yield browser
    browser.quit()


def is_stale(element) -> bool:
    """True once `element` left the document. Chromium reports that either as a stale element or,
    when the node is looked up mid-navigation, as an "unknown error" saying the node "does not
    belong to the document" (Selenium's staleness_of only knows the first: a flaky CI failure)."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise


class Reader:
    """Drives the page for one reader and remembers every answer it gave."""

    def __init__(self, browser, base: str, answers: dict, seen: list):
        self.browser, self.base, self.answers, self.seen = browser, base, answers, seen

    def sign_in(self, reader_id: str, passcode: str = "pass1234") -> None:
        self.browser.get(self.base + "/")
        self.browser.find_element(By.ID, "reader_id").send_keys(reader_id)
        self.browser.find_element(By.ID, "passcode").send_keys(passcode)
        self.browser.find_element(By.ID, "start").click()
        WebDriverWait(self.browser, 10).until(
            lambda d: d.find_elements(By.ID, "study-image") or d.find_elements(By.CLASS_NAME,
                                                                               "error"))
        self.reader_id = reader_id

    def image_id(self) -> str:
        return self.browser.find_element(By.ID, "study-image").get_attribute("src").rsplit(
            "/", 1)[1]

    def progress(self) -> str:
        return self.browser.find_element(By.ID, "progress-text").text

    def vote(self, vote: str, by: str, note: str = "") -> None:
        self.seen.append((self.browser.current_url, self.browser.page_source))
        public_id, image = self.image_id(), self.browser.find_element(By.ID, "study-image")
        if note:
            box = self.browser.find_element(By.ID, "note")
            box.clear()
            box.send_keys(note)
        if by == "click":
            self.browser.find_element(By.ID, f"vote-{vote}").click()
        else:  # like a reader: click the image (leaves the note box), press the key
            image.click()
            ActionChains(self.browser).send_keys(vote[0]).perform()
        WebDriverWait(self.browser, 10).until(lambda d: is_stale(image))
        WebDriverWait(self.browser, 10).until(
            lambda d: d.find_elements(By.ID, "study-image") or d.find_elements(By.ID, "done"))
        self.answers[(self.reader_id, public_id)] = vote


def _expected(answers: dict, truth: dict) -> dict:
    expected = {}
    for (reader, public_id), vote in answers.items():
        cls, synthetic = truth[public_id]
        for key in ((reader, cls), (reader, "(all)")):
            source = "synthetic" if synthetic else "real"
            counts = expected.setdefault((*key, source), {"real": 0, "fake": 0, "unclear": 0})
            counts[vote] += 1
    return expected


def test_two_readers_vote_resume_after_kill_and_report_matches(tmp_path, driver):
    real, fake = make_demo_trees(tmp_path / "trees_src", per_class=3)
    study = create_study(real, fake, tmp_path / "study.sqlite", per_source=5, seed=1)
    add_readers(study, "dr.a")  # readers are made by the study owner
    add_readers(study, "dr.b", passcode="other-pass")
    with sqlite3.connect(study) as conn:
        truth = {p: (c, s) for p, c, s in conn.execute(
            "SELECT public_id, class_name, is_synthetic FROM images")}
    assert len(truth) == 10
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    answers, seen = {}, []
    page = Reader(driver, base, answers, seen)
    proc = start_server(study, port)
    try:
        page.sign_in("dr.a")
        assert page.progress() == "0 / 10 rated"
        page.vote("real", "click", note="sharp cortex, plausible")
        page.vote("fake", "click", note="skull too smooth")
        page.vote("unclear", "click")
        page.vote("fake", "key")
        assert page.progress() == "4 / 10 rated"
        os.kill(proc.pid, signal.SIGKILL)  # mid-study crash
        proc.wait(timeout=10)
        proc = start_server(study, port)
        driver.get(base + "/")  # the cookie still signs dr.a in: straight to image 5
        assert driver.current_url == base + "/study/5" and page.progress() == "4 / 10 rated"
        # shortcuts do nothing while typing a note (it holds r, f and u)
        note = driver.find_element(By.ID, "note")
        note.send_keys(FUR_NOTE)
        assert driver.current_url == base + "/study/5"
        assert note.get_attribute("value") == FUR_NOTE
        driver.save_screenshot(str(tmp_path / "page.png"))
        page.vote("real", "key")
        for vote, by in [("fake", "key"), ("unclear", "key"), ("real", "click"),
                         ("fake", "key"), ("real", "click")]:
            page.vote(vote, by)
        assert driver.find_element(By.ID, "done").is_displayed()
        driver.find_element(By.ID, "review").click()  # change the first answer
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "current")))
        assert "Real" in driver.find_element(By.ID, "current").text
        assert driver.find_element(By.ID, "note").get_attribute("value") == \
            "sharp cortex, plausible"
        page.vote("unclear", "key")
        driver.find_element(By.ID, "sign-out").click()
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "reader_id")))

        page.sign_in("dr.a", "not-the-passcode")  # someone else cannot take dr.a's place
        # wait for the reloaded page's message (reading the old page's node mid-reload races)
        WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(
            EC.text_to_be_present_in_element((By.CLASS_NAME, "error"), "wrong passcode"))
        page.sign_in("dr.b", "other-pass")
        assert page.progress() == "0 / 10 rated"
        assert "sharp cortex" not in driver.page_source  # dr.a's notes stay private
        plan = ["fake", "fake", "real", "unclear", "real", "fake", "real", "real", "fake",
                "unclear"]
        for i, vote in enumerate(plan):
            page.vote(vote, "key" if i % 2 else "click", note="odd ventricles" if i == 3 else "")
        assert driver.find_element(By.ID, "done").is_displayed()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    for url, html in seen:  # nothing of the source reached the browser
        for leak in LEAKS:
            assert leak not in url and leak not in html, leak
    with sqlite3.connect(study) as conn:
        stored = {(r, p): v for r, p, v in conn.execute(
            "SELECT v.reader_id, i.public_id, v.vote FROM votes v JOIN images i "
            "ON i.id = v.image_id")}
        history = conn.execute("SELECT reader_id, vote FROM vote_history").fetchall()
    assert stored == answers and len(stored) == 20
    assert history == [("dr.a", "real")]

    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out)]) == 0
    counts = pd.read_csv(out / "answers.csv", keep_default_na=False)
    expected = _expected(answers, truth)
    got = {(r.reader, r._2, r.source): {"real": r.real, "fake": r.fake, "unclear": r.unclear}
           for r in counts.itertuples()}
    assert got == expected
    notes = pd.read_csv(out / "notes.csv")
    assert sorted(notes.note) == [FUR_NOTE, "odd ventricles", "sharp cortex, plausible",
                                  "skull too smooth"]

    shot = Image.open(tmp_path / "page.png")
    assert shot.format == "PNG" and shot.size[0] >= 800
    keep = os.environ.get("READER_STUDY_SCREENSHOT")
    if keep:  # a small palette PNG for the repository
        shot.convert("RGB").quantize(colors=96).save(keep, optimize=True)


def _error_text(browser) -> str:
    # wait for the reloaded page's message (reading the old page's node mid-reload races)
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.find_elements(By.CLASS_NAME, "error"))
    return browser.find_element(By.CLASS_NAME, "error").text


def test_foreign_host_and_guessed_passcodes_are_refused_in_chromium(tmp_path, rebinding_driver,
                                                                    capsys):
    browser = rebinding_driver
    real, fake = make_demo_trees(tmp_path / "trees_src", per_class=2)
    study = tmp_path / "study.sqlite"
    assert main(["create", "--real", str(real), "--fake", str(fake), "--size", "64",
                 "--readers", "dr.c", "--out", str(study)]) == 0
    passcode = re.search(r"reader dr\.c\s+passcode (\S+)", capsys.readouterr().out).group(1)
    with sqlite3.connect(study) as conn:
        public_id = conn.execute("SELECT public_id FROM images").fetchone()[0]
    port = free_port()
    proc = start_server(study, port)
    try:
        # 1: the page of a rebound name reaches the server but gets nothing from it
        for path in ("/", f"/img/{public_id}", "/static/study.js"):
            browser.get(f"http://{ATTACKER}:{port}{path}")
            assert "Invalid host header" in browser.find_element(By.TAG_NAME, "body").text
            assert not browser.find_elements(By.ID, "reader_id")
        assert browser.get_cookies() == []
        # and a form it posts from its own origin does not sign in (the page cannot read the
        # answer anyway; the server refuses it before any passcode check)
        browser.execute_script(
            "const f = document.createElement('form'); f.method = 'post';"
            f"f.action = 'http://{ATTACKER}:{port}/login';"
            "for (const [k, v] of [['reader_id', 'dr.c'], ['passcode', arguments[0]]]) {"
            "  const i = document.createElement('input'); i.name = k; i.value = v;"
            "  f.appendChild(i); }"
            "document.body.appendChild(f); f.submit();", passcode)
        WebDriverWait(browser, 10).until(
            lambda d: "Invalid host header" in d.find_element(By.TAG_NAME, "body").text)
        assert browser.get_cookies() == []

        # 3: five wrong passcodes, then even the right one is refused for a while
        base = f"http://127.0.0.1:{port}"
        page = Reader(browser, base, {}, [])
        for i in range(5):
            page.sign_in("dr.c", f"guess-{i:04d}")
            assert "Unknown reader ID or wrong passcode" in _error_text(browser)
        page.sign_in("dr.c", passcode)
        assert "Too many failed sign-ins" in _error_text(browser)
        assert not browser.find_elements(By.ID, "study-image")
        assert browser.get_cookies() == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with sqlite3.connect(study) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
