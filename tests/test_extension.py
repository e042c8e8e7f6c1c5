"""The browser extension, loaded unpacked into a real headless Chromium (Playwright with the
system browser), against the real API, Redis and worker on 127.0.0.1. The context-menu
handler is called with the same info object Chromium passes to ``contextMenus.onClicked``."""

import base64
import json
import shutil

import pytest

from .conftest import ROOT, LoopbackServer, shared

EXT = ROOT / "browser_extension"
ART = ROOT / "out" / "test-artifacts"
PAGE_TAB = {"id": -1, "url": "http://127.0.0.1/article", "title": "An article"}


@pytest.fixture(scope="module")
def playwright():
    """One Playwright for the module (two at once would share one event loop)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    ART.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        yield p, chromium


def launch(playwright, ext, profile):
    """Chromium with the unpacked extension at ``ext``: (context, extension id)."""
    p, chromium = playwright
    ctx = p.chromium.launch_persistent_context(
        str(profile), executable_path=chromium, headless=True,
        viewport={"width": 460, "height": 900},
        args=[f"--disable-extensions-except={ext}", f"--load-extension={ext}", "--no-sandbox", "--disable-gpu",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--disable-quic"])
    sw = ctx.service_workers[0] if ctx.service_workers else ctx.wait_for_event("serviceworker", timeout=30000)
    return ctx, sw.url.split("/")[2]


@pytest.fixture(scope="module")
def browser(service, playwright, tmp_path_factory):
    ctx, ext_id = launch(playwright, EXT, tmp_path_factory.mktemp("profile"))
    yield ctx, ext_id
    ctx.close()


@pytest.fixture(scope="module")
def media(service):
    srv = LoopbackServer()
    srv.routes["/v/clip.mp4"] = (200, {"Content-Type": "video/mp4"},
                                 shared("media", "devset", "videos", "dfdc_abqwwspghj_fake.mp4").read_bytes())
    srv.routes["/img/obama.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                    shared("media", "unlabeled", "obama.jpg").read_bytes())
    srv.routes["/v/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                 shared("media", "devset", "videos", "film_real.mp4").read_bytes())
    srv.routes["/post"] = (200, {"Content-Type": "text/html"},
                           b'<html><body><video src="/v/film.mp4"></video></body></html>')
    srv.routes["/v/other.mp4"] = (200, {"Content-Type": "video/mp4"},  # a clip no other test checks
                                  shared("media", "devset", "face_clips", "fake_abhggqdift.mp4_0_0.mp4").read_bytes())
    yield srv
    srv.close()


def wait_until(page, js: str, arg=None, timeout: float = 240.0):
    """Poll ``js`` (a function source) from Python: extension pages forbid the eval that
    Playwright's wait_for_function uses, while evaluate() goes through CDP."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(js, arg)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {js}"
        time.sleep(0.2)


def sw_of(ctx):
    # the newest: a worker Chromium stopped can linger in the list until its close event
    return ctx.service_workers[-1] if ctx.service_workers else ctx.wait_for_event("serviceworker", timeout=30000)


def click_menu(ctx, info, tab=PAGE_TAB) -> str:
    info = {"menuItemId": "check-deepfake", "editable": False, "frameId": 0, **info}
    return sw_of(ctx).evaluate("([info, tab]) => self.handleMenuClick(info, tab)", [info, tab])


def configure(ctx, ext_id, api_url, token):
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/options.html")
    page.fill("#apiUrl", api_url)
    page.fill("#token", token)
    page.click("#save")
    page.wait_for_selector("#status:has-text('Saved')")
    page.click("#test")
    wait_until(page, "() => { const t = document.querySelector('#status').textContent; "
                     "return t.length > 10 && !t.startsWith('Saved'); }", timeout=30)
    status = page.text_content("#status")
    page.close()
    return status


def result_view(ctx, ext_id, local_id=None, timeout=240.0):
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/popup.html")
    if local_id:
        wait_until(page, "(id) => chrome.storage.local.get('checks').then(({checks}) => "
                   "(checks || []).some(c => c.localId === id && ['done','failed'].includes(c.state)))",
                   local_id, timeout)
    return page


def test_options_page_stores_and_tests_the_token(browser, service):
    ctx, ext_id = browser
    bad = configure(ctx, ext_id, service.base, "dfk_wrong")
    assert "refused this token" in bad and "options" not in bad  # this page is the options
    down = configure(ctx, ext_id, "http://127.0.0.1:9", "dfk_wrong")
    assert "not answering" in down
    token = service.token("extension")
    ok = configure(ctx, ext_id, service.base + "/", token)
    assert 'accepts the token "extension"' in ok
    stored = sw_of(ctx).evaluate("chrome.storage.local.get('settings').then(x => x.settings)")
    assert stored == {"apiUrl": service.base, "token": token}  # trailing slash trimmed


def test_options_take_the_address_as_pasted_and_refuse_one_without_scheme(browser, service):
    ctx, ext_id = browser
    token = service.token("extension-paste")
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/options.html")
    page.evaluate("() => { document.querySelector('#apiUrl').type = 'text'; }")  # as pasted, spaces kept
    page.fill("#apiUrl", f"  {service.base}/ ")
    page.fill("#token", f" {token} ")
    page.click("#test")  # before Save: Test uses the address Save would store
    wait_until(page, "() => document.querySelector('#status').textContent.startsWith('Connected')", timeout=30)
    page.click("#save")
    page.wait_for_selector("#status:has-text('Saved')")
    stored = sw_of(ctx).evaluate("chrome.storage.local.get('settings').then(x => x.settings)")
    assert stored == {"apiUrl": service.base, "token": token}
    bare = service.base.split("://", 1)[1]
    page.fill("#apiUrl", bare)
    page.click("#save")
    page.wait_for_selector("#status.bad")
    assert f"http://{bare}" in page.text_content("#status")  # says what to type
    page.click("#test")
    page.wait_for_selector("#status.bad")
    again = sw_of(ctx).evaluate("chrome.storage.local.get('settings').then(x => x.settings)")
    assert again == stored  # the scheme-less address was not saved
    page.close()


def test_install_opens_a_welcome_and_a_good_test_saves_what_it_tested(browser, service):
    ctx, ext_id = browser
    welcome = [p for p in ctx.pages if p.url.endswith("/options.html#welcome")]
    assert welcome, [p.url for p in ctx.pages]  # opened by onInstalled, before any check
    assert welcome[0].is_visible("#welcome") and "deepfake-token create" in welcome[0].text_content("#where-token")
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/options.html")
    assert not page.is_visible("#welcome")
    token = service.token("extension-test-saves")
    page.fill("#apiUrl", service.base)
    page.fill("#token", token)
    page.click("#test")  # no Save
    wait_until(page, "() => document.querySelector('#status').textContent.startsWith('Connected and saved')",
               timeout=30)
    page.reload()
    wait_until(page, "(t) => document.querySelector('#token').value === t", token, timeout=10)
    assert page.input_value("#apiUrl") == service.base
    page.close()


def test_an_outage_mid_check_is_shown_and_clears(browser, service, media):
    """The service stops answering while a check runs (here: the address the extension
    polls goes dead): the popup says so, then the check continues and finishes."""
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-outage"))
    media.routes["/v/outage.mp4"] = media.routes["/v/film.mp4"]
    media.delays["/v/outage.mp4"] = 12.0
    local_id = click_menu(ctx, {"mediaType": "video", "srcUrl": media.url("/v/outage.mp4")})
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/popup.html")
    wait_until(page, "(id) => chrome.storage.local.get('checks').then(({checks}) => "
               "checks.some(c => c.localId === id && c.jobId))", local_id, timeout=30)
    dead = "http://127.0.0.1:9"
    page.evaluate("(u) => chrome.storage.local.get('settings').then(({settings}) => "
                  "chrome.storage.local.set({settings: {...settings, apiUrl: u}}))", dead)
    page.wait_for_selector(".card .outage", timeout=30000)
    assert "has not answered" in page.text_content(".outage")
    page.evaluate("(u) => chrome.storage.local.get('settings').then(({settings}) => "
                  "chrome.storage.local.set({settings: {...settings, apiUrl: u}}))", service.base)
    wait_until(page, "(id) => chrome.storage.local.get('checks').then(({checks}) => "
               "checks.some(c => c.localId === id && c.state === 'done'))", local_id, timeout=240)
    page.wait_for_selector(".card[data-state=done]")
    assert not page.query_selector(".outage")
    media.delays.pop("/v/outage.mp4")
    page.close()


def test_the_progress_bar_never_moves_back(browser):
    """A check waits in the queue again after its download and a stage starts at 0 of N:
    the bar on screen keeps the widest it has shown."""
    ctx, ext_id = browser
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/popup.html")
    widths = page.evaluate("""async () => {
        const { barWidth, progressFraction } = await import('./api.js');
        const views = [{stage: 'submitting'}, {stage: 'queued'}, {stage: 'downloading'},
                       {stage: 'queued'}, {stage: 'detecting_faces', progress: {done: 0, total: 8}},
                       {stage: 'detecting_faces', progress: {done: 4, total: 8}},
                       {stage: 'scoring', progress: {done: 0, total: 3}}, {stage: 'rendering'}];
        const shown = new Map();
        return { raw: views.map(v => progressFraction(v)),
                 bar: views.map(v => barWidth({ localId: 'a', ...v }, shown)) };
    }""")
    assert widths["raw"][3] < widths["raw"][2]  # what the stages alone would show
    assert widths["bar"] == sorted(widths["bar"]) and widths["bar"][-1] > widths["bar"][0]
    page.close()


def test_video_check_shows_score_shots_and_gallery(browser, service, media):
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-video"))
    local_id = click_menu(ctx, {"mediaType": "video", "srcUrl": media.url("/v/clip.mp4"),
                                "pageUrl": media.url("/post")})
    page = result_view(ctx, ext_id, local_id)
    page.wait_for_selector(".card[data-state=done] img.gallery")
    wait_until(page, "() => document.querySelector('img.gallery').naturalWidth > 100", timeout=30)
    text = page.text_content(".card")
    assert "%" in text and "probability that the faces were manipulated" in text
    rows = page.query_selector_all("table.shots tr")
    assert rows and page.text_content("table.shots tr td div") == "Shot 1"
    assert "0:00.0–0:10.0" in page.text_content("table.shots")
    # one person seen in several frames, not "N faces" (which reads as N people)
    job_id = page.evaluate("(id) => chrome.storage.local.get('checks').then(({checks}) => "
                           "checks.find(c => c.localId === id).jobId)", local_id)
    shot = json.loads(service.redis.hget(f"df:job:{job_id}", "report"))["shots"][0]
    counts = [c["face_count"] for c in shot["clusters"]]
    who = "1 person" if len(counts) == 1 else f"{len(counts)} people"
    assert f"{who}, seen in {' + '.join(map(str, counts))} frames" in page.text_content("table.shots")
    assert page.get_attribute("a[href*='/r/']", "href").startswith(service.base)
    page.screenshot(path=str(ART / "extension_result.png"), full_page=True)
    page.close()


def test_people_across_shots_in_the_popup(browser, service, media, two_people_video):
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-people"))
    media.routes["/v/people.mp4"] = (200, {"Content-Type": "video/mp4"}, two_people_video.read_bytes())
    local_id = click_menu(ctx, {"linkUrl": media.url("/v/people.mp4"), "pageUrl": media.url("/post")})
    page = result_view(ctx, ext_id, local_id)  # the newest check is the one shown
    page.wait_for_selector(".card[data-state=done] ul.people")
    people = [t.strip() for t in page.eval_on_selector_all("ul.people .person-text", "els => els.map(e => e.textContent)")]
    assert [p.split(":")[0] for p in people] == ["Person A (shots 1, 3)", "Person B (shots 2, 4)"]
    assert page.eval_on_selector_all("ul.people img.thumb", "els => els.filter(e => e.naturalWidth > 0).length") == 2
    page.screenshot(path=str(ART / "extension_people.png"), full_page=True)
    page.close()


def test_feedback_from_the_popup_is_stored_and_changeable(browser, service, media):
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-feedback"))
    media.routes["/img/fb-obama3.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                          shared("media", "unlabeled", "obama3.jpg").read_bytes())
    local_id = click_menu(ctx, {"mediaType": "image", "srcUrl": media.url("/img/fb-obama3.jpg"),
                                "pageUrl": media.url("/post")})
    page = result_view(ctx, ext_id, local_id)
    page.wait_for_selector(".card[data-state=done] .feedback button[data-opinion=wrong]")
    job_id = page.evaluate("(id) => chrome.storage.local.get('checks').then(({checks}) => "
                           "checks.find(c => c.localId === id).jobId)", local_id)
    def opinions():
        return sorted(json.loads(v)["opinion"] for v in service.redis.hgetall(f"df:feedback:{job_id}").values())
    page.click(".feedback button[data-opinion=wrong]")
    page.wait_for_selector(".feedback button.selected[data-opinion=wrong]")
    assert opinions() == ["wrong"]
    assert page.text_content(".feedback-note").startswith("Thank you: noted that this verdict looks wrong")
    page.click(".feedback button[data-opinion=right]")
    page.wait_for_selector(".feedback button.selected[data-opinion=right]")
    assert opinions() == ["right"]  # changed, not added
    assert page.text_content(".feedback-note").startswith("Changed")
    page.screenshot(path=str(ART / "extension_feedback.png"), full_page=True)
    page.close()


def test_image_link_page_and_data_url_checks(browser, service, media):
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-more"))
    ids = [
        click_menu(ctx, {"mediaType": "image", "srcUrl": media.url("/img/obama.jpg"), "pageUrl": media.url("/post")}),
        click_menu(ctx, {"linkUrl": media.url("/v/film.mp4"), "pageUrl": media.url("/post")}),
        click_menu(ctx, {"pageUrl": media.url("/post")}, {"id": -1, "url": media.url("/post"), "title": "A post"}),
    ]
    photo = base64.b64encode(shared("media", "unlabeled", "biden.jpg").read_bytes()).decode()
    ids.append(click_menu(ctx, {"mediaType": "image", "srcUrl": f"data:image/jpeg;base64,{photo}",
                                "pageUrl": media.url("/post")}))
    page = result_view(ctx, ext_id)
    for local_id in ids:
        wait_until(page, "(id) => chrome.storage.local.get('checks').then(({checks}) => "
                   "checks.some(c => c.localId === id && c.state === 'done'))", local_id)
    checks = sw_of(ctx).evaluate("chrome.storage.local.get('checks').then(x => x.checks)")
    by_id = {c["localId"]: c for c in checks}
    kinds = [by_id[i]["kind"] for i in ids]
    assert kinds == ["image", "link", "page", "image"]
    assert by_id[ids[0]]["report"]["kind"] == "image" and by_id[ids[3]]["report"]["kind"] == "image"
    assert by_id[ids[2]]["report"]["kind"] == "video"  # the page's embedded video, found by yt-dlp
    assert "/img/obama.jpg" in media.requests
    assert by_id[ids[3]]["url"] == "Image embedded in the page"  # not the whole data: URL
    page.reload()
    page.wait_for_selector(".history .row")
    assert len(page.query_selector_all(".history .row")) >= 4  # the history of earlier checks
    notes = sw_of(ctx).evaluate("chrome.notifications.getAll()")
    assert ids[0] in notes  # finished while no popup was open: a notification
    page.close()


def test_bad_token_and_no_api_show_their_messages(browser, service, media):
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, "dfk_revoked_or_wrong")
    local_id = click_menu(ctx, {"linkUrl": media.url("/v/film.mp4"), "pageUrl": media.url("/post")})
    page = result_view(ctx, ext_id, local_id)
    page.wait_for_selector(".card[data-state=failed] .error")
    assert "refused the API token" in page.text_content(".error")
    page.screenshot(path=str(ART / "extension_bad_token.png"), full_page=True)
    page.close()
    configure(ctx, ext_id, "", "")
    local_id = click_menu(ctx, {"linkUrl": media.url("/v/film.mp4")})
    page = result_view(ctx, ext_id, local_id)
    page.wait_for_selector(".card[data-state=failed] .error")
    assert "Set the service address" in page.text_content(".error")
    page.close()


def test_a_check_survives_the_service_worker_being_stopped(browser, service, media):
    import time

    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-restart"))
    local_id = click_menu(ctx, {"mediaType": "video", "srcUrl": media.url("/v/other.mp4")})
    helper = ctx.new_page()
    helper.goto(f"chrome-extension://{ext_id}/options.html")
    cdp = ctx.new_cdp_session(helper)
    cdp.send("ServiceWorker.enable")
    cdp.send("ServiceWorker.stopAllWorkers")
    time.sleep(3)
    state = helper.evaluate("(id) => chrome.storage.local.get('checks').then(({checks}) => "
                            "checks.find(c => c.localId === id).state)", local_id)
    assert state not in ("done", "failed")  # stopped mid-check: nobody is polling
    page = result_view(ctx, ext_id, local_id)  # opening the view wakes the worker, which resumes
    page.wait_for_selector(".card[data-state=done]")
    assert "%" in page.text_content(".verdict")
    page.close()
    helper.close()


def test_history_rows_have_date_verdict_colour_selection_and_a_clear_button(browser, service, media):
    """Runs last in this module: it clears the history."""
    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-history"))
    done_id = click_menu(ctx, {"mediaType": "image", "srcUrl": media.url("/img/obama.jpg")})
    page = result_view(ctx, ext_id, done_id)
    # a check that never got its job (the browser closed mid-submission) and a failed one
    page.evaluate("""() => chrome.storage.local.get('checks').then(({checks}) => chrome.storage.local.set({checks: [
        {localId: 'stuck', url: 'https://example.org/v.mp4', kind: 'link', state: 'submitting',
         created: Date.now() - 3600e3, updated: Date.now() - 3600e3},
        {localId: 'bad', url: 'https://example.org/gone.mp4', kind: 'link', state: 'failed', error: 'gone',
         created: Date.now() - 86400e3 * 3, updated: Date.now() - 86400e3 * 3},
        ...checks]}))""")
    page.reload()
    page.wait_for_selector(".history .row.selected")
    rows = page.query_selector_all(".history .row")
    assert len(rows) >= 3
    pills = {r.get_attribute("title"): (r.query_selector(".pill").get_attribute("class"),
                                        r.query_selector(".pill").text_content(),
                                        r.query_selector(".when").text_content()) for r in rows}
    assert pills["https://example.org/v.mp4"][:2] == ("pill band-stuck", "no answer")  # not "…" forever
    assert pills["https://example.org/gone.mp4"][:2] == ("pill band-failed", "failed")
    assert all(w for _, _, w in pills.values())  # every row has its time or date
    done = pills[media.url("/img/obama.jpg")]
    assert done[0].split()[-1].startswith("band-") and ("%" in done[1] or done[1] in ("inconclusive", "no face"))
    # the row clicked is the one shown, marked
    rows[-1].click()
    page.wait_for_selector(".history .row.selected")
    assert page.query_selector_all(".history .row")[-1].get_attribute("class") == "row selected"
    page.screenshot(path=str(ART / "extension_history.png"), full_page=True)
    page.click("button.clear")
    wait_until(page, "() => chrome.storage.local.get('checks').then(({checks}) => "
               "checks.every(c => !['done', 'failed'].includes(c.state)))", timeout=10)
    left = sw_of(ctx).evaluate("chrome.storage.local.get('checks').then(x => x.checks.map(c => c.localId))")
    assert left == ["stuck"]  # an unfinished check stays
    page.close()


def test_a_submission_interrupted_by_a_stopped_service_worker_ends_with_one_check(browser, service, media):
    """The service worker stops while its POST /v1/checks is in flight (the server has the
    check, the answer is lost): when it wakes, it sends the submission again with the same
    idempotency key, finds that check, and shows its result. The server made one check."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    ctx, ext_id = browser
    seen = {"posts": 0, "keys": []}

    class Proxy(BaseHTTPRequestHandler):  # the API, with the first submission's answer held back
        def _forward(self, method):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            r = requests.request(method, service.base + self.path, data=body, headers=headers, timeout=60)
            if method == "POST" and self.path == "/v1/checks":
                seen["posts"] += 1
                seen["keys"].append(self.headers.get("Idempotency-Key"))
                if seen["posts"] == 1:
                    time.sleep(15)  # the worker is stopped meanwhile; this answer reaches no one
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def do_GET(self):
            self._forward("GET")

        def do_POST(self):
            self._forward("POST")

        def do_OPTIONS(self):
            self._forward("OPTIONS")

        def log_message(self, *a):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        configure(ctx, ext_id, f"http://127.0.0.1:{proxy.server_address[1]}", service.token("extension-interrupt"))
        media.routes["/v/interrupted.mp4"] = media.routes["/v/film.mp4"]
        helper = ctx.new_page()
        helper.goto(f"chrome-extension://{ext_id}/options.html")
        sw = sw_of(ctx)
        info = {"menuItemId": "check-deepfake", "editable": False, "frameId": 0, "mediaType": "video",
                "srcUrl": media.url("/v/interrupted.mp4")}
        sw.evaluate("([info, tab]) => { self.handleMenuClick(info, tab); }", [info, PAGE_TAB])  # not awaited
        deadline = time.monotonic() + 30
        while seen["posts"] < 1:
            assert time.monotonic() < deadline, "the submission never reached the service"
            time.sleep(0.05)
        cdp = ctx.new_cdp_session(helper)
        cdp.send("ServiceWorker.enable")
        cdp.send("ServiceWorker.stopAllWorkers")
        time.sleep(1)
        checks = helper.evaluate("() => chrome.storage.local.get('checks').then(({checks}) => checks)")
        mine = [c for c in checks if c.get("resubmit") == info["srcUrl"]]
        # the answer was lost: still submitting, unless Chromium woke the worker at once and it
        # has resubmitted already (a second POST, which the checks below hold to the first key)
        assert len(mine) == 1 and (mine[0]["state"] == "submitting" and not mine[0].get("jobId")
                                   or seen["posts"] >= 2)
        page = result_view(ctx, ext_id, mine[0]["localId"])  # wakes the worker, which resubmits
        page.wait_for_selector(".card[data-state=done]", timeout=240000)
        assert page.text_content(".verdict")
        # sent again on waking (a wake-up may send it more than once): always with the first key
        assert seen["posts"] >= 2 and len(set(seen["keys"])) == 1 and seen["keys"][0]
        jobs = [k for k in service.redis.keys("df:job:*") if service.redis.hget(k, "input") == info["srcUrl"]]
        assert len(jobs) == 1  # one check on the server, found again by the retry
        assert media.requests.count("/v/interrupted.mp4") == 1
        page.close()
        helper.close()
    finally:
        proxy.shutdown()


# --- media the extension reads in the page: streamed videos, embedded players ----------
@pytest.fixture(scope="module")
def granted(service, playwright, tmp_path_factory):
    """The extension as a right-click leaves it on a page at 127.0.0.1: activeTab grants the
    tab's origin (here a host permission for it, which a test cannot get by clicking), and
    webNavigation, only so that the test can name frames by their extension frame ids."""
    ext = tmp_path_factory.mktemp("ext") / "browser_extension"
    shutil.copytree(EXT, ext)
    manifest = json.loads((ext / "manifest.json").read_text())
    manifest["host_permissions"] = ["http://127.0.0.1/*"]
    manifest["permissions"].append("webNavigation")
    (ext / "manifest.json").write_text(json.dumps(manifest))
    ctx, ext_id = launch(playwright, ext, tmp_path_factory.mktemp("profile2"))
    yield ctx, ext_id
    ctx.close()


@pytest.fixture(scope="module")
def players(service, media):
    """A second loopback server: embedded players, another origin than the pages."""
    srv = LoopbackServer()
    clip = shared("media", "devset", "videos", "film_fake.mp4").read_bytes()
    srv.routes["/v/player.mp4"] = (200, {"Content-Type": "video/mp4"}, clip)
    srv.routes["/player"] = (200, {"Content-Type": "text/html"}, (
        b'<html><body><video id="v" muted><source src="/v/player.mp4" type="video/mp4"></video><script>'
        b'fetch("/v/player.mp4").then(r => r.blob()).then(b => { const v = document.getElementById("v");'
        b' v.src = URL.createObjectURL(b); document.title = "ready"; });</script></body></html>'))
    streamed = media.url("/v/streamed.mp4")
    media.routes["/v/streamed.mp4"] = media.routes["/v/film.mp4"]
    media.routes["/stream"] = (200, {"Content-Type": "text/html"}, (
        '<html><head><title>A streamed clip</title><meta property="og:video:type" content="video/mp4">'
        f'<meta property="og:video" content="{streamed}"></head><body><video id="v" muted></video><script>'
        'const ms = new MediaSource(); document.getElementById("v").src = URL.createObjectURL(ms);'
        '</script></body></html>').encode())
    for name, host in (("/embed", "localhost"), ("/embed-same-site", "127.0.0.1")):
        media.routes[name] = (200, {"Content-Type": "text/html"}, (
            f'<html><head><title>Embedded</title></head><body><p>An article</p>'
            f'<iframe src="http://{host}:{srv.port}/player" width="400" height="300"></iframe></body></html>').encode())
    yield srv
    srv.close()


def _open(ctx, url):
    """A tab showing ``url``: (its page, its extension tab id)."""
    tab = ctx.new_page()
    tab.goto(url)
    return tab, sw_of(ctx).evaluate("(u) => chrome.tabs.query({}).then(ts => ts.find(t => t.url === u).id)", url)


def _player_frame(ctx, page, tab_id):
    """(extension frame id, URL, blob: src of its video) of the embedded player."""
    frame = next(f for f in page.frames if f.url.endswith("/player"))
    frame.wait_for_function("() => document.title === 'ready'", timeout=30000)
    src = frame.evaluate("() => document.getElementById('v').src")
    frames = sw_of(ctx).evaluate("(t) => chrome.webNavigation.getAllFrames({tabId: t})", tab_id)
    fid = next(f["frameId"] for f in frames if f["url"] == frame.url)
    return fid, frame.url, src


def test_a_streamed_video_says_why_and_its_page_link_gives_a_result(granted, service, media, players):
    ctx, ext_id = granted
    configure(ctx, ext_id, service.base, service.token("extension-stream"))
    page_url = media.url("/stream")
    tab, tab_id = _open(ctx, page_url)
    src = tab.evaluate("() => document.getElementById('v').src")
    assert src.startswith("blob:")
    local_id = click_menu(ctx, {"mediaType": "video", "srcUrl": src, "pageUrl": page_url},
                          {"id": tab_id, "url": page_url, "title": "A streamed clip"})
    view = result_view(ctx, ext_id, local_id, timeout=30)
    view.wait_for_selector(".card[data-state=failed] .error")
    assert "streamed to the player in pieces" in view.text_content(".error")
    offers = view.query_selector_all("button.offer")
    assert [o.text_content() for o in offers] == ["Check the page's link instead"]
    assert media.requests.count("/stream") == 1  # only the browser's visit so far
    offers[0].click()  # the page's link, which the service hands to yt-dlp
    view.wait_for_selector(".card[data-state=done] .verdict", timeout=240000)
    assert "%" in view.text_content(".verdict") or "Inconclusive" in view.text_content(".verdict")
    assert media.requests.count("/stream") >= 2 and "/v/streamed.mp4" in media.requests  # the service read the page
    checks = sw_of(ctx).evaluate("chrome.storage.local.get('checks').then(x => x.checks)")
    assert [c["url"] for c in checks[:2]] == [page_url, "Video from the page (" + src[5:60] + ")"]
    view.screenshot(path=str(ART / "extension_streamed.png"), full_page=True)
    view.close()
    tab.close()


def test_an_embedded_player_is_read_in_its_frame_or_offered_by_its_address(granted, service, media, players):
    ctx, ext_id = granted
    configure(ctx, ext_id, service.base, service.token("extension-embed"))
    # another origin (port) the extension may read: the bytes come from the player's frame
    page_url = media.url("/embed-same-site")
    tab, tab_id = _open(ctx, page_url)
    fid, frame_url, src = _player_frame(ctx, tab, tab_id)
    assert fid != 0
    local_id = click_menu(ctx, {"mediaType": "video", "srcUrl": src, "pageUrl": page_url, "frameId": fid,
                                "frameUrl": frame_url}, {"id": tab_id, "url": page_url, "title": "Embedded"})
    view = result_view(ctx, ext_id, local_id)
    view.wait_for_selector(".card[data-state=done] .verdict")
    assert view.text_content(".medium").startswith("video.mp4")  # the bytes' name: what was analysed
    view.close()
    tab.close()

    # a player from a site the extension may not read: the sentence, and its address offered
    page_url = media.url("/embed")
    tab, tab_id = _open(ctx, page_url)
    fid, frame_url, src = _player_frame(ctx, tab, tab_id)
    assert frame_url.startswith("http://localhost:")
    local_id = click_menu(ctx, {"mediaType": "video", "srcUrl": src, "pageUrl": page_url, "frameId": fid,
                                "frameUrl": frame_url}, {"id": tab_id, "url": page_url, "title": "Embedded"})
    view = result_view(ctx, ext_id, local_id, timeout=30)
    view.wait_for_selector(".card[data-state=failed] .error")
    assert "embedded from another site" in view.text_content(".error")
    offers = view.query_selector_all("button.offer")
    assert [o.text_content() for o in offers] == [f"Check the player's address (localhost:{players.port})",
                                                  "Check the page's link instead"]
    before = players.requests.count("/player")
    offers[0].click()
    view.wait_for_selector(".card[data-state=done] .verdict", timeout=240000)
    assert players.requests.count("/player") > before  # the service fetched the player's page
    assert "/v/player.mp4" in players.requests[before:]
    view.close()
    tab.close()


def test_a_several_shot_result_and_a_portrait_video_fit_the_popup(browser, service, media, tmp_path):
    """At the popup's size (420 px wide, at most 600 high): no horizontal scrolling, one
    scrollbar (the page's), a gallery preview of bounded height that opens full size, the
    faces of each shot as thumbnails, the medium named, a URL broken in its path only."""
    import subprocess

    ctx, ext_id = browser
    configure(ctx, ext_id, service.base, service.token("extension-fit"))
    portrait = tmp_path / "portrait.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(shared("media", "devset", "videos", "anchor_real.mp4")),
                    "-t", "4", "-vf", "crop=ih*9/16:ih,scale=540:960", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(portrait)],
                   check=True)
    media.routes["/v/hamilton-clip.mp4"] = (200, {"Content-Type": "video/mp4"},
                                           shared("media", "unlabeled", "short_hamilton_clip.mp4").read_bytes())
    media.routes["/v/portrait.mp4"] = (200, {"Content-Type": "video/mp4"}, portrait.read_bytes())
    shots = click_menu(ctx, {"linkUrl": media.url("/v/hamilton-clip.mp4"), "pageUrl": media.url("/post")})
    tall = click_menu(ctx, {"linkUrl": media.url("/v/portrait.mp4"), "pageUrl": media.url("/post")})
    for local_id, name in ((shots, "several_shots"), (tall, "portrait")):
        page = result_view(ctx, ext_id, local_id)
        page.set_viewport_size({"width": 420, "height": 600})
        # show this check (the newest is shown first; select it through its history row)
        page.evaluate("(id) => chrome.storage.local.get('checks').then(({checks}) => "
                      "[...document.querySelectorAll('#history .row')][checks.findIndex(c => c.localId === id)].click())",
                      local_id)
        page.wait_for_selector(".card[data-state=done] img.gallery")
        wait_until(page, "() => document.querySelector('img.gallery').complete && "
                         "document.querySelector('img.gallery').naturalWidth > 100", timeout=30)
        fit = page.evaluate("""() => {
            const g = document.querySelector('img.gallery'), popup = document.querySelector('.popup');
            const scrollers = [...document.querySelectorAll('*')].filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowY));
            return { docWidth: document.documentElement.scrollWidth, galleryH: g.getBoundingClientRect().height,
                     galleryW: g.getBoundingClientRect().width, naturalH: g.naturalHeight,
                     href: g.closest('a') && g.closest('a').href, target: g.closest('a') && g.closest('a').target,
                     scrollers: scrollers.length, rows: document.querySelectorAll('table.shots tr').length,
                     thumbRows: [...document.querySelectorAll('table.shots tr')].filter(r => r.querySelector('.thumbs img')).length,
                     medium: document.querySelector('.medium').textContent,
                     host: getComputedStyle(document.querySelector('.card .url .host')).whiteSpace };
        }""")
        page.screenshot(path=str(ART / f"extension_fit_{name}.png"), full_page=True)
        assert fit["docWidth"] <= 420, fit  # no horizontal scrolling
        assert fit["galleryH"] <= 222 and fit["galleryW"] <= 400, fit  # a bounded preview...
        assert fit["href"].endswith("/gallery.png") or "/gallery" in fit["href"], fit
        assert fit["target"] == "_blank"  # ...that opens full size
        assert fit["scrollers"] == 0, fit  # no scroll box inside the popup's own scrolling
        assert fit["host"] == "nowrap"
        if name == "several_shots":
            assert fit["rows"] >= 3 and fit["thumbRows"] >= 2, fit
            assert fit["medium"].startswith("hamilton-clip.mp4 · video, 640×360")
        else:
            assert fit["naturalH"] > 222, fit  # the gallery itself is taller than the preview
            assert fit["medium"].startswith("portrait.mp4 · video, 540×960"), fit
            assert fit["thumbRows"] == 1
        page.close()


def test_the_popup_bands_are_the_reports():
    from detector.report import AUTHENTIC_BELOW, MANIPULATED_FROM

    api = (EXT / "api.js").read_text()
    assert f"score < {AUTHENTIC_BELOW} ?" in api and f"score >= {MANIPULATED_FROM} ?" in api


def test_a_stored_stage_only_moves_forward(browser):
    """The analysis queue after the download reads as still downloading, not as going back to
    the start; a terminal state always comes through (api.js forwardOnly, used on every update)."""
    ctx, ext_id = browser
    page = ctx.new_page()
    page.goto(f"chrome-extension://{ext_id}/options.html")
    got = page.evaluate("""() => import('./api.js').then(m => [
        m.forwardOnly({stage: 'downloading'}, {stage: 'queued', state: 'queued'}).stage,
        m.forwardOnly({stage: 'downloading'}, {stage: 'probing', state: 'running'}).stage,
        m.forwardOnly({stage: 'scoring'}, {stage: 'done', state: 'done'}).stage,
        m.forwardOnly(undefined, {stage: 'queued', state: 'queued'}).stage])""")
    assert got == ["downloading", "probing", "done", "queued"]
    page.close()
