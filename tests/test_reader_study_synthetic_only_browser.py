"""Synthetic-only study (seed 001's protocol) in headless Chromium: a reader signs in, gives
their background, answers real / phony / unclear with notes (by clicks and the P key), and
the report's counts equal what was answered.

Needs the Debian packages ``chromium`` and ``chromium-driver``; skipped without them.
"""

from __future__ import annotations

import pandas as pd
import pytest

from synthmed.reader_study.cli import main
from synthmed.reader_study.create import create_synthetic_only_study
from synthmed.reader_study.demo import make_demo_trees

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from reader_study_helpers import add_readers, free_port, start_server
# the same skip rules (chromium, chromedriver, selenium) and browser setup as the blinded-study test
from test_reader_study_browser import _chromium, is_stale, pytestmark  # noqa: E402,F401


@pytest.fixture()
def driver(tmp_path):
    browser = _chromium(tmp_path / "chrome-profile")
    yield browser
    browser.quit()


def _answer(driver, vote: str, note: str = "", by_key: bool = False) -> None:
    image = driver.find_element(By.ID, "study-image")
    if note:
        driver.find_element(By.ID, "note").send_keys(note)
    if by_key:  # like a reader: click the image (leaves the note box), press the key
        image.click()
        ActionChains(driver).send_keys({"fake": "p"}.get(vote, vote[0])).perform()
    else:
        driver.find_element(By.ID, f"vote-{vote}").click()
    WebDriverWait(driver, 10).until(lambda d: is_stale(image))
    WebDriverWait(driver, 10).until(
        lambda d: d.find_elements(By.ID, "study-image") or d.find_elements(By.ID, "done"))


def test_reader_gives_background_answers_and_report_counts_match(tmp_path, driver):
    _, fake = make_demo_trees(tmp_path / "trees_src", per_class=2)
    study = create_synthetic_only_study(fake, tmp_path / "study.sqlite", size=64)
    add_readers(study, "dr.a")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(study, port)
    try:
        driver.get(base + "/")
        assert "Real, phony or unclear?" in driver.page_source
        assert "generated" not in driver.page_source.lower()  # readers are not told
        driver.find_element(By.ID, "reader_id").send_keys("dr.a")
        driver.find_element(By.ID, "passcode").send_keys("pass1234")
        driver.find_element(By.ID, "start").click()
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "specialty")))
        driver.find_element(By.ID, "specialty").send_keys("neuroradiology")
        driver.find_element(By.ID, "years").send_keys("9")
        driver.find_element(By.ID, "genai-no").click()
        driver.find_element(By.ID, "save-background").click()
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "study-image")))
        buttons = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "button.choice")]
        assert buttons == ["R\nReal", "P\nPhony", "U\nUnclear"] or \
            [t.replace("\n", "") for t in buttons] == ["RReal", "PPhony", "UUnclear"]
        _answer(driver, "real", note="grey-white contrast looks authentic")
        _answer(driver, "fake", note="ventricles <b>too</b> symmetric")
        _answer(driver, "unclear")
        _answer(driver, "fake", by_key=True)
        assert driver.find_element(By.ID, "done").is_displayed()
    finally:
        proc.kill()
        proc.wait(timeout=10)

    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), "--paper", "seed001"]) == 0
    counts = pd.read_csv(out / "counts.csv").set_index("modality").loc["all"]
    assert (counts.reader, counts.real, counts.phony, counts.unclear) == ("dr.a", 1, 2, 1)
    assert counts.background == "neuroradiology, 9 years, unfamiliar with generative AI"
    notes = pd.read_csv(out / "notes.csv")
    assert sorted(notes.answer) == ["phony", "real"]
    text = (out / "reader_study_report.md").read_text()
    assert "| all | phony | 21 | 28 | 2 |" in text  # paper A, paper B, ours
    assert "ventricles &lt;b&gt;too&lt;/b&gt; symmetric" in text
