"""The page in a real Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

A real server (uvicorn on loopback, in a thread) over a fresh gallery: sign in, enroll two people from LFW
photos through the page, identify a third photo and find the right name drawn over the face, watch a (fake)
camera that shows an enrolled person's photo and find the name over the face, group unsorted photos and name
a group, read the warning for a photo cut close to the face. Screenshots go to ``out/browser/`` (kept by CI,
ignored by git).
"""
from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cut_to_box, lfw_photo
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'facegnet[server]'")
pytest.importorskip("selenium", reason="selenium is not installed (it is in the test extra: pip install -e '.[test]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("browser tests need Debian's chromium and chromium-driver: "
                "apt-get install chromium chromium-driver (.ci/run installs them)", allow_module_level=True)

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from facegnet.server import create_app  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TOKEN = "browser-test-token-42"
SHOTS = ROOT / "out" / "browser"
WAIT = 90  # seconds: generous, the CPU may be shared with a training run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_y4m(photo: Path, out: Path, frames: int = 5, size: tuple[int, int] = (480, 360)) -> Path:
    """A short raw video (YUV4MPEG2, 4:2:0) of one photo on grey: Chromium's fake camera plays it in a loop."""
    canvas = Image.new("RGB", size, (90, 90, 90))
    face = Image.open(photo).convert("RGB").resize((300, 300))
    canvas.paste(face, ((size[0] - 300) // 2, (size[1] - 300) // 2))
    y, u, v = (np.asarray(c) for c in canvas.convert("YCbCr").split())
    half = (size[0] // 2, size[1] // 2)
    u = np.asarray(Image.fromarray(u).resize(half, Image.BILINEAR))
    v = np.asarray(Image.fromarray(v).resize(half, Image.BILINEAR))
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes())
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory, recognizer):
    """A uvicorn server on a free loopback port, serving a fresh gallery."""
    gallery = tmp_path_factory.mktemp("browser") / "gallery"
    app = create_app(gallery, TOKEN, recognizer=recognizer)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    video = write_y4m(lfw_photo("Serena_Williams", 3), tmp_path_factory.mktemp("camera") / "camera.y4m")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900", "--use-fake-ui-for-media-stream",
                     "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no Selenium Manager download
    driver.set_script_timeout(WAIT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(driver, css: str, condition=None, timeout: float = WAIT):
    """The first element matching ``css`` (and ``condition(element)``), waiting for it; shows the page's message."""
    def found(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed() and (condition is None or condition(element)):
                return element
        return False

    try:
        # The camera redraws its boxes on every frame: an element found a moment ago may be gone.
        return WebDriverWait(driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=[StaleElementReferenceException]).until(found)
    except TimeoutException:
        message = driver.find_element(By.ID, "message").text
        driver.save_screenshot(str(SHOTS / "failure.png"))
        raise AssertionError(f"{css} did not appear within {timeout} s; the page says: {message!r}") from None


def thumbnails_loaded(card) -> bool:
    images = card.find_elements(By.CSS_SELECTOR, "img.thumb")
    return bool(images) and all(img.get_property("naturalWidth") > 0 for img in images)


def test_sign_in_is_required(site, browser):
    browser.get(site + "/")
    wait_for(browser, "#login")
    assert not browser.find_element(By.ID, "tabs").is_displayed()
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(browser, "#message.error", lambda e: "wrong token" in e.text)
    assert browser.find_element(By.ID, "login").is_displayed()


def test_enroll_two_people_then_identify_a_third_photo(site, browser):
    browser.get(f"{site}/#token={TOKEN}")
    wait_for(browser, "#people-grid")
    assert "token" not in browser.current_url  # taken out of the address bar
    for name, lfw in (("Colin Powell", "Colin_Powell"), ("Serena Williams", "Serena_Williams")):
        browser.find_element(By.ID, "enroll-name").send_keys(name)
        photos = "\n".join(str(lfw_photo(lfw, n)) for n in (1, 2))
        browser.find_element(By.ID, "enroll-files").send_keys(photos)
        browser.find_element(By.CSS_SELECTOR, "#enroll-form button[type=submit]").click()
        card = wait_for(browser, f'.person[data-name="{name}"]', thumbnails_loaded)
        assert "2 photos" in card.text and len(card.find_elements(By.CSS_SELECTOR, "img.thumb")) == 2
    browser.save_screenshot(str(SHOTS / "people.png"))

    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="identify"]').click()
    browser.find_element(By.ID, "identify-file").send_keys(str(lfw_photo("Colin_Powell", 3)))
    box = wait_for(browser, "#identify-result .box")
    label = box.find_element(By.CSS_SELECTOR, ".label")
    assert box.get_attribute("data-name") == "Colin Powell" and label.text.startswith("Colin Powell")
    # The box sits on the face: inside the photo, a plausible face size.
    photo = browser.find_element(By.CSS_SELECTOR, "#identify-result img")
    assert photo.rect["width"] > 100 and 0.15 < box.rect["width"] / photo.rect["width"] < 0.8
    assert photo.rect["x"] <= box.rect["x"] <= photo.rect["x"] + photo.rect["width"]
    browser.save_screenshot(str(SHOTS / "identify.png"))


def test_camera_names_the_face(site, browser):
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="camera"]').click()
    browser.find_element(By.ID, "camera-start").click()
    # Read the drawn label in one step in the page (the boxes are redrawn with every frame).
    label = WebDriverWait(browser, WAIT, poll_frequency=0.2).until(lambda d: d.execute_script(
        "const label = document.querySelector('#camera-stage .box[data-name=\"Serena Williams\"] .label');"
        "return label && label.textContent;"))
    assert label.startswith("Serena Williams ")
    assert "frames/s" in browser.find_element(By.ID, "camera-status").text
    browser.save_screenshot(str(SHOTS / "camera.png"))
    browser.find_element(By.ID, "camera-stop").click()


def test_cluster_unsorted_photos_and_name_a_group(site, browser):
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="clusters"]').click()
    photos = [lfw_photo(person, n) for person in ("George_W_Bush", "Gerhard_Schroeder") for n in (1, 2, 3)]
    browser.find_element(By.ID, "cluster-files").send_keys("\n".join(str(p) for p in photos))
    browser.find_element(By.ID, "cluster-start").click()
    first = wait_for(browser, "#cluster-groups .group.open", thumbnails_loaded)
    groups = browser.find_elements(By.CSS_SELECTOR, "#cluster-groups .group.open")
    assert len(groups) >= 2 and "6 faces" in browser.find_element(By.ID, "cluster-status").text
    # Leaving the camera tab stops it: a frame encoded meanwhile must not be sent (it showed a 422 banner here).
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#message.error") if e.is_displayed()]
    assert not errors, errors
    browser.save_screenshot(str(SHOTS / "clusters.png"))
    group_id = first.get_attribute("data-group")
    first.find_element(By.CSS_SELECTOR, "input:not([type=checkbox])").send_keys("First group")
    first.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, "#message.ok", lambda e: "as First group" in e.text)
    named = wait_for(browser, f'#cluster-groups .group.named[data-group="{group_id}"]')
    assert "First group (enrolled)" in named.text
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="people"]').click()
    wait_for(browser, '.person[data-name="First group"]', thumbnails_loaded)


# ---------------------------------------------------------------------------------------------- a phone
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
CONTROLS = "button, input:not([type=file]), a, label.drop, select, textarea"


def overflow(driver) -> dict:
    """The page's width against the viewport's, and every visible control that sticks out of the viewport."""
    return driver.execute_script("""
        const width = window.innerWidth, out = [];
        for (const node of document.querySelectorAll(arguments[0])) {
          const r = node.getBoundingClientRect();
          if (!r.width || !r.height || node.closest('[hidden]')) continue;  // not shown
          if (r.left < 0 || r.right > width + 0.5) out.push(`${node.id || node.textContent.trim() || node.tagName}`
                                                                 + ` (${Math.round(r.left)}..${Math.round(r.right)})`);
        }
        return {inner: width, scroll: document.documentElement.scrollWidth, outside: out};
    """, CONTROLS)


def test_the_page_fits_a_phone(site, browser):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        open_tab(browser, site, "people")
        wait_for(browser, ".person img.thumb")
        for tab in ("people", "identify", "camera", "clusters"):
            browser.find_element(By.CSS_SELECTOR, f'#tabs [data-tab="{tab}"]').click()
            if tab == "clusters":
                wait_for(browser, "#cluster-groups .group")
            seen = overflow(browser)
            # Not zoomed out (the viewport stays the phone's 390 px), nothing wider, every control on screen.
            assert seen["inner"] == 390 and seen["scroll"] <= seen["inner"] and not seen["outside"], (tab, seen)
            if tab == "people":
                browser.save_screenshot(str(SHOTS / "phone.png"))
        browser.find_element(By.ID, "logout").click()
        wait_for(browser, "#login")
        seen = overflow(browser)
        assert seen["scroll"] <= seen["inner"] == 390 and not seen["outside"], ("sign-in", seen)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# ---------------------------------------------------------------------------------------------- signing out
def hashchange_listeners(driver) -> int:
    window = driver.execute_cdp_cmd("Runtime.evaluate", {"expression": "window"})["result"]["objectId"]
    listeners = driver.execute_cdp_cmd("DOMDebugger.getEventListeners", {"objectId": window})["listeners"]
    return sum(1 for listener in listeners if listener["type"] == "hashchange")


def gallery_shown(driver) -> dict:
    """What of the gallery the page shows: the summary line, person cards, cluster groups, identified photos."""
    return driver.execute_script("""
        return {summary: document.querySelector('#summary').textContent,
                people: document.querySelectorAll('#people-grid .person').length,
                groups: document.querySelectorAll('#cluster-groups .group').length,
                identified: document.querySelectorAll('#identify-result img, #identify-list li').length};
    """)


def sign_in(driver, token: str) -> None:
    field = wait_for(driver, "#token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()


def open_tab(driver, site: str, tab: str) -> None:
    """Sign in by the server's link and open a tab (the page reopens the tab it showed last)."""
    driver.get(f"{site}/#token={TOKEN}")
    wait_for(driver, f'#tabs [data-tab="{tab}"]').click()


def test_signing_out_or_a_wrong_token_leaves_no_figures(site, browser):
    open_tab(browser, site, "people")
    wait_for(browser, ".person img.thumb")
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="identify"]').click()
    browser.find_element(By.ID, "identify-file").send_keys(str(lfw_photo("Colin_Powell", 3)))
    wait_for(browser, "#identify-result .box")
    shown = gallery_shown(browser)
    assert "people" in shown["summary"] and shown["people"] >= 2 and shown["identified"] >= 1
    nothing = {"summary": "", "people": 0, "groups": 0, "identified": 0}
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "#login")
    assert gallery_shown(browser) == nothing
    listeners = hashchange_listeners(browser)
    sign_in(browser, "not-the-token")
    wait_for(browser, "#message.error", lambda e: "wrong token" in e.text)
    assert gallery_shown(browser) == nothing
    sign_in(browser, TOKEN)
    wait_for(browser, '#tabs [data-tab="people"]').click()
    wait_for(browser, ".person img.thumb")
    assert hashchange_listeners(browser) == listeners  # signing in adds no listener
    # A link with a wrong token, opened while signed in: back to the sign-in, the gallery's figures gone.
    browser.execute_script("location.hash = '#token=not-the-token-either'")
    wait_for(browser, "#login")
    assert gallery_shown(browser) == nothing and not browser.find_element(By.ID, "tabs").is_displayed()


def test_a_rejected_photo_leaves_no_broken_image(site, browser, tmp_path):
    open_tab(browser, site, "identify")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n" * 20)
    browser.find_element(By.ID, "identify-file").send_keys(str(text))
    wait_for(browser, "#message.error", lambda e: "not an image" in e.text)
    broken = browser.execute_script(
        "return [...document.querySelectorAll('#identify-result img')].filter((i) => !i.naturalWidth).length")
    assert broken == 0
    browser.save_screenshot(str(SHOTS / "rejected.png"))


def test_api_docs_render_without_internet(site, browser):
    # Swagger UI's files ship in the package (fastapi-offline): /docs renders with no CDN to reach.
    browser.get(site + "/docs")
    title = wait_for(browser, ".swagger-ui .info .title", lambda e: "facegnet" in e.text)
    assert "facegnet" in title.text
    assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path[data-path='/api/identify']")
    browser.save_screenshot(str(SHOTS / "docs.png"))


# ---------------------------------------------------------------------------------------------- a photo cut tight
def test_a_photo_cut_tight_is_named_on_the_page(site, browser, recognizer, tmp_path):
    """Enrolling and identifying a photo cut close to the face (LFW photos cut with PIL to MTCNN's box) shows the
    server's warning in the message line, naming the photo; a whole photo shows none. It fits a phone's width."""
    whole = tmp_path / "whole.jpg"
    shutil.copy(lfw_photo("Tony_Blair", 1), whole)
    tight = cut_to_box(recognizer, lfw_photo("Tony_Blair", 2), tmp_path / "tight.jpg")
    probe = cut_to_box(recognizer, lfw_photo("Tony_Blair", 3), tmp_path / "probe-tight.jpg")
    open_tab(browser, site, "people")
    browser.find_element(By.ID, "enroll-name").send_keys("Tony Blair")
    browser.find_element(By.ID, "enroll-files").send_keys(f"{whole}\n{tight}")
    browser.find_element(By.CSS_SELECTOR, "#enroll-form button[type=submit]").click()
    message = wait_for(browser, "#message.warning", lambda e: "Enrolled 2 photo(s) of Tony Blair" in e.text)
    assert "tight.jpg: face is cut tight (" in message.text and "whole.jpg" not in message.text, message.text
    browser.save_screenshot(str(SHOTS / "tight-enrol.png"))

    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="identify"]').click()
    browser.find_element(By.ID, "identify-file").send_keys(str(lfw_photo("Tony_Blair", 4)))
    message = wait_for(browser, "#message.ok", lambda e: e.text.startswith("1 face(s) in Tony_Blair_0004.jpg"))
    assert message.text == "1 face(s) in Tony_Blair_0004.jpg.", message.text  # a whole photo: no warning

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        browser.find_element(By.ID, "identify-file").send_keys(str(probe))
        message = wait_for(browser, "#message.warning", lambda e: e.text.startswith("1 face(s) in probe-tight.jpg."))
        assert " Face 1 is cut tight (" in message.text and message.text.endswith("enrol and search whole photos.")
        wait_for(browser, '#identify-result .box[data-name="Tony Blair"]')
        browser.save_screenshot(str(SHOTS / "tight-phone.png"))
        # Not zoomed out: the box of a face cut tight runs past the photo's edges; drawn so, it widened the page.
        seen = overflow(browser)
        assert seen["scroll"] <= seen["inner"] == 390 and not seen["outside"], seen
        box = message.rect  # the whole message on the screen, wrapped within it
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.save_screenshot(str(SHOTS / "tight-identify.png"))

    # Grouping: the face cut tight is marked, with why; naming its group warns as enrolling does.
    cut = cut_to_box(recognizer, lfw_photo("Serena_Williams", 1), tmp_path / "serena-tight.jpg")
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="clusters"]').click()
    browser.find_element(By.ID, "cluster-files").send_keys(f"{cut}\n{lfw_photo('Serena_Williams', 2)}")
    browser.find_element(By.ID, "cluster-start").click()
    wait_for(browser, "#cluster-status", lambda e: e.text.startswith("2 faces"))  # not the earlier job's groups
    wait_for(browser, "#cluster-groups .group.open", thumbnails_loaded)
    marked = browser.find_elements(By.CSS_SELECTOR, "#cluster-groups figure.tight")
    assert [f.get_attribute("title").split(":")[0] for f in marked] == ["serena-tight.jpg"], marked
    assert "cut tight (" in marked[0].get_attribute("title")
    browser.save_screenshot(str(SHOTS / "tight-clusters.png"))
    group = marked[0].find_element(By.XPATH, "./ancestor::article")
    name = group.find_element(By.CSS_SELECTOR, "input:not([type=checkbox])")
    name.clear()  # filled in when the gallery knows her already
    name.send_keys("Serena Williams")
    group.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    message = wait_for(browser, "#message.warning", lambda e: "as Serena Williams." in e.text)
    assert re.search(r" serena-tight\.jpg \(face \d\): face is cut tight \(", message.text), message.text
