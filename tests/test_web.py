"""The web page at `/` in a real headless Chromium against a real server on 127.0.0.1:
an uploaded file, the microphone (Chromium's fake capture device playing a wav), bad files."""

import shutil
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf

sync_api = pytest.importorskip("playwright.sync_api")

from asr_engine.audio import load_audio  # noqa: E402
from asr_engine.backend import load_model  # noqa: E402
from asr_engine.engine import Engine  # noqa: E402
from servers import Running  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
SAMPLE = "asr_engine/samples/sample1.wav"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def engine():
    return Engine(load_model(None, "auto"))


@pytest.fixture(scope="module")
def srv(engine):
    r = Running(engine, idle_timeout=10.0)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def offline(engine):
    return engine.transcribe_files([SAMPLE])[0].text


def page_url(srv):
    return srv.url.replace("ws://", "http://") + "/"


def test_page_is_served_over_plain_http(srv):
    with urllib.request.urlopen(page_url(srv), timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        body = r.read().decode()
    assert '<button id="mic"' in body and 'type: "start", version: 1' in body


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    # The fake microphone plays 1 s of silence, sample1, then 2.5 s of silence, looped: speech, then an
    # endpoint. (The leading silence is what a capture that starts late loses: on a loaded machine the page's
    # first audio arrived after "it was a" had played, and the first final missed half its words.)
    x = load_audio(SAMPLE)
    wav = tmp_path / "mic.wav"
    sf.write(wav, np.concatenate([np.zeros(16000, np.float32), x, np.zeros(40000, np.float32)]), 16000,
             subtype="PCM_16")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"])
        yield b
        b.close()


def watch_partials(page):
    """Record every partial the page shows, as the user saw it."""
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const t = document.getElementById("partial").textContent;
            if (t) window.seen.push(t);
        }).observe(document.getElementById("partial"), {subtree: true, childList: true, characterData: true});
    }""")


def finals(page):
    return page.eval_on_selector_all("#finals li .text", "els => els.map(e => e.textContent)")


SCREENSHOT_DIR = __import__("pathlib").Path(__import__("tempfile").gettempdir())


def test_uploaded_file_streams_with_live_partials_and_equals_offline(srv, browser, offline):
    page = browser.new_page()
    page.goto(page_url(srv))
    watch_partials(page)
    page.uncheck("#endpoint")
    page.set_input_files("#file", SAMPLE)
    page.click("#send")  # real-time pacing: 2.25 s
    sync_api.expect(page.locator("#status")).to_have_text("done", timeout=TIMEOUT_MS)
    assert finals(page) == [offline]
    seen = page.evaluate("window.seen")
    assert seen and all(offline.startswith(s.split()[0]) for s in seen)  # partials came before the final
    assert page.inner_text("#partial") == ""  # the final replaced the partial
    assert "fast path on" in page.inner_text("#finals li small")
    assert "skipped the upper half" in page.get_attribute("#finals li small", "title")
    # the page names the model and says how good it is, from the server's /info
    sync_api.expect(page.locator("#model")).to_contain_text("real recorded speech", timeout=TIMEOUT_MS)
    # the transcript downloads as text and as subtitles
    with page.expect_download() as d:
        page.click("#save-txt")
    assert open(d.value.path(), encoding="utf-8").read() == offline + "\n"
    with page.expect_download() as d:
        page.click("#save-srt")
    srt = open(d.value.path(), encoding="utf-8").read().splitlines()
    assert srt[0] == "1" and srt[1].startswith("00:00:0") and " --> " in srt[1] and srt[2] == offline
    page.screenshot(path=str(SCREENSHOT_DIR / "page.png"), full_page=True)
    assert page.is_enabled("#mic") and page.is_enabled("#send")


def test_the_page_over_https_streams_over_wss(engine, browser, offline, tls_files):
    """`serve --tls-cert`: the page loads over https and streams back over wss (the only way a browser on
    another machine gets the microphone); the browser is told to accept the test's own CA."""
    r = Running(engine, idle_timeout=10.0, tls_cert=tls_files.cert, tls_key=tls_files.key)
    try:
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(r.url.replace("ws://", "https://") + "/")
        assert page.evaluate("window.isSecureContext")
        page.uncheck("#endpoint")
        page.set_input_files("#file", SAMPLE)
        page.click("#send")
        sync_api.expect(page.locator("#status")).to_have_text("done", timeout=TIMEOUT_MS)
        assert finals(page) == [offline]
        context.close()
    finally:
        r.stop()


def test_microphone_gives_partials_an_endpoint_final_and_a_last_final(srv, browser, offline):
    page = browser.new_page()
    page.goto(page_url(srv))
    watch_partials(page)
    page.click("#mic")
    sync_api.expect(page.locator("#status")).to_have_text("listening…", timeout=TIMEOUT_MS)
    assert page.inner_text("#mic") == "Stop microphone" and page.is_disabled("#send")
    # The silence after the speech ends the first utterance on its own (continuous mode).
    page.wait_for_selector("#finals li", timeout=TIMEOUT_MS)
    words = set(offline.split())
    heard = lambda: [f for f in finals(page) if len(words & set(f.split())) >= len(words) / 2]  # noqa: E731
    deadline = time.monotonic() + TIMEOUT_MS / 1000  # a capture that started mid-speech: the next loop's final
    while not heard() and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert heard(), (finals(page), offline)
    assert page.evaluate("window.seen")
    page.click("#mic")  # stop: the rest is flushed, the server sends its last final and closes
    sync_api.expect(page.locator("#status")).to_have_text("done", timeout=TIMEOUT_MS)
    assert page.inner_text("#mic") == "Start microphone" and page.is_enabled("#send")


def test_bad_files_get_a_clear_message_and_the_page_stays_usable(srv, browser, tmp_path, offline):
    page = browser.new_page()
    page.goto(page_url(srv))
    (tmp_path / "notes.wav").write_bytes(b"this is not audio at all" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    page.click("#send")
    assert page.inner_text("#status") == "choose an audio file first"
    for name in ("notes.wav", "empty.wav"):
        page.set_input_files("#file", str(tmp_path / name))
        page.click("#send")
        sync_api.expect(page.locator("#status")).to_contain_text(name, timeout=TIMEOUT_MS)
        assert page.get_attribute("#status", "class") == "error"
        assert "cannot decode" in page.inner_text("#status") or "no audio" in page.inner_text("#status")
        assert page.is_enabled("#send")
    page.check("#fast")
    page.set_input_files("#file", SAMPLE)
    page.click("#send")
    sync_api.expect(page.locator("#status")).to_have_text("done", timeout=TIMEOUT_MS)
    assert " ".join(finals(page)) == offline
