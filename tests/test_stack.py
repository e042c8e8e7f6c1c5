"""`deepfake-serve --demo`: the one command that starts the local stack."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from .conftest import ROOT, _free_port


def test_serve_starts_everything_checks_the_demo_and_stops_cleanly(mesonet_store, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    import asyncio
    import threading

    from .fake_telegram import FakeTelegram

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    fake = FakeTelegram("777:STACK")
    tg_url = asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DEEPFAKE_REDIS_URL")}
    env.update(DEEPFAKE_CACHE_DIR=str(tmp_path / "cache"), DEEPFAKE_WEIGHTS_DIR=str(mesonet_store.root),
               DEEPFAKE_FRAMES_PER_SHOT_CPU="4", PYTHONUNBUFFERED="1",
               TELEGRAM_BOT_TOKEN="777:STACK", TELEGRAM_BASE_URL=tg_url)
    env.pop("SLACK_BOT_TOKEN", None)
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "stack", "--demo", "--port", str(port),
                             "--concurrency", "1"], env=env, cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops everything." not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        out = log.read_text()
        page = re.search(r"demo:\s+report page (\S+)", out)
        assert page, out[-3000:]
        assert re.search(r"demo:\s+(Likely authentic|Uncertain|Likely manipulated) \(\d+\.\d%\), 3 shots", out)
        token = re.search(r"token:\s+(dfk_\S+)", out).group(1)
        html = requests.get(page.group(1), timeout=10)
        assert html.status_code == 200 and "Shots" in html.text
        assert requests.get(f"http://127.0.0.1:{port}/v1/model-card", timeout=10).status_code == 200
        r = requests.post(f"http://127.0.0.1:{port}/v1/checks", json={"url": "http://10.9.9.9/x.mp4"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 422  # the printed token works
        assert "telegram: started" in out
        deadline = time.monotonic() + 60
        while not fake.calls_of("getUpdates"):  # the bot polls the (fake) Bot API
            assert time.monotonic() < deadline, out[-3000:]
            time.sleep(0.2)
        assert fake.calls_of("getMe")
        # a newcomer's next step: a token, without knowing where the private Redis listens
        made = subprocess.run([sys.executable, "-m", "extension_api.tokens", "create", "newcomer"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        r = requests.post(f"http://127.0.0.1:{port}/v1/checks", json={"url": "http://10.9.9.9/x.mp4"},
                          headers={"Authorization": f"Bearer {made.stdout.strip()}"}, timeout=10)
        assert r.status_code == 422, r.text  # the token is known to the running stack
        # the bot talks to the API (its client session opens), so shutdown must close it
        loop.call_soon_threadsafe(fake.push, fake.message("/about"))
        deadline = time.monotonic() + 60
        while not any("About these checks" in (p.get("text") or "") for p in fake.calls_of("sendMessage")):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-s", str(os.getpgid(proc.pid))], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) >= 5  # serve, redis-server, the worker (+ its pool), the API, the bot
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("deepfake-serve did not stop within 60 s of Ctrl-C:\n" + log.read_text()[-4000:])
        time.sleep(1)
        left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert left == [], left
        out = log.read_text()
        assert "Unclosed client session" not in out and "Unclosed connector" not in out, out[-3000:]
        assert re.search(r"check [0-9a-f]{32}: (Likely authentic|Uncertain|Likely manipulated|Inconclusive)", out)
        assert not re.search(r'"GET /v1/checks/[0-9a-f]{32} HTTP/1.1" 200', out)  # status polls are quiet
        assert "POST /v1/checks" in out  # the submissions are logged
        assert not (tmp_path / "cache" / "data" / "stack.json").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
