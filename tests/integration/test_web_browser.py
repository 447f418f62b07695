"""The workbench in a real browser: headless Chromium from the distribution's packages, driven by
Selenium (no browser download). A moderator signs in, moves with the keyboard, selects three
pictures with shift-click, sets their category by typing, sees the counter change, undoes, and
the rows in Postgres say so. The screenshots of the grid and the picture page in `docs/` are made
here.
"""

from __future__ import annotations

import csv
import shutil
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.collect.archive import import_archive
from pipeline.samples import generate_sample_accounts
from pipeline.storage import ObjectStore
from pipeline.web import users
from pipeline.web.app import create_app
from tests.catalogue_rows import add_prediction, reset_catalogue

DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "correct horse battery"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(migrated, settings, dataset, tmp_path_factory):
    """24 sample photos, each predicted as its true category (the three of the commonest one
    least sure, so first in the queue); a moderator; the workbench on a free port."""
    import uvicorn

    reset_catalogue(migrated)
    with migrated.begin() as connection:
        connection.execute(text("TRUNCATE catalogue.moderators, catalogue.login_failures CASCADE"))
    archive = tmp_path_factory.mktemp("browser-archive")
    generate_sample_accounts(dataset, archive, size=24, seed=5, carousel_share=0, video_share=0)
    import_archive(archive, engine=migrated, store=ObjectStore.for_images(settings), workers=4)
    with (archive / "labels.csv").open(encoding="utf-8") as handle:
        truth = {row["shortcode"]: row["category"] for row in csv.DictReader(handle)}
    commonest = Counter(v for v in truth.values() if v).most_common(1)[0][0]
    with migrated.connect() as connection:
        images = connection.execute(text("SELECT id, shortcode FROM raw.post_images")).all()
    first = sorted((i for i in images if truth[i.shortcode] == commonest), key=lambda i: i.id)[:3]
    others = [i for i in images if i not in first and truth[i.shortcode]]
    for n, image in enumerate([*first, *others]):
        add_prediction(
            migrated, image.id, "category",
            [(truth[image.shortcode], 0.40 + n / 100), ("Kurtas" if n else "Shirts", 0.3)],
        )  # fmt: skip
    users.add_person(engine=migrated, name="maria", role="moderator", password=PASSWORD)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings, engine=migrated), host="127.0.0.1", port=port,
                            log_level="warning")  # fmt: skip
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", commonest, len(images)
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no Chromium: apt-get install -y chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _rows(engine, image_ids: list[int]) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT l.image_id, l.value, l.source, l.moderator, j.kind, j.origin "
                "FROM catalogue.labels l JOIN catalogue.label_jobs j ON j.id = l.job_id "
                "WHERE l.image_id = ANY(:ids) AND l.attribute = 'category' ORDER BY l.id"
            ),
            {"ids": image_ids},
        ).all()


def test_a_moderator_labels_three_pictures_by_keyboard_and_undoes(server, browser, migrated):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, value, pictures = server
    wait = WebDriverWait(browser, 15)
    browser.get(f"{url}/review?attribute=category")
    assert "/login" in browser.current_url  # nothing without a session
    browser.find_element(By.NAME, "name").send_keys("maria")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    wait.until(lambda b: b.find_elements(By.ID, "grid"))
    remaining = browser.find_element(By.ID, "remaining")
    before = int(remaining.text)
    cells = browser.find_elements(By.CSS_SELECTOR, "#grid .cell")
    assert len(cells) == before == pictures
    wait.until(lambda b: all(b.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    ) for _ in [0]))  # fmt: skip

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert "cursor" in cells[2].get_attribute("class")
    body.send_keys(Keys.ARROW_LEFT)
    assert "cursor" in cells[1].get_attribute("class")
    # the first three are predicted `value`, unsure: select them with a click and a shift-click
    cells[0].click()
    ActionChains(browser).key_down(Keys.SHIFT).click(cells[2]).key_up(Keys.SHIFT).perform()
    chosen = [c for c in cells if "selected" in c.get_attribute("class")]
    assert chosen == cells[:3]
    ids = [int(c.get_attribute("data-image-id")) for c in chosen]
    body.send_keys(value[:3].lower())
    assert f"→ {value}" in browser.find_element(By.ID, "typed").text
    body.send_keys(Keys.ENTER)
    wait.until(lambda b: int(b.find_element(By.ID, "remaining").text) == before - 3)
    assert [c.find_element(By.CLASS_NAME, "label").text for c in cells[:3]] == [value] * 3
    assert _rows(migrated, ids) == [(i, value, "moderator", "maria", "label", "web")
                                    for i in ids]  # fmt: skip
    cells[3].click()  # the grid after work: for the README
    browser.save_screenshot(str(DOCS / "workbench-review.png"))

    body.send_keys("u")
    wait.until(lambda b: int(b.find_element(By.ID, "remaining").text) == before)
    assert "undone" in browser.find_element(By.ID, "status").text
    undone = _rows(migrated, ids)
    assert undone[3:] == [(i, None, "undo", "maria", "undo", "web") for i in ids]
    assert [c.find_element(By.CLASS_NAME, "label").text for c in cells[:3]] == ["—"] * 3

    browser.get(f"{url}/pictures/{ids[0]}")
    history = browser.find_element(By.CLASS_NAME, "history").text
    assert value in history and "(cleared)" in history and "maria" in history
    assert browser.execute_script("return document.querySelector('img.large').naturalWidth") > 0
    browser.save_screenshot(str(DOCS / "workbench-picture.png"))
