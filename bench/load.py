"""The API under a mixed load at a fixed rate, with event streams held open beside it.

    python bench/load.py [--rate 200] [--seconds 60] [--streams 200]

Starts a private redis-server, a Celery worker and the API on 127.0.0.1, opens
``--streams`` event streams (8 per token, the most a token may hold: 25 tokens for 200)
on a check whose download hangs, then sends requests at ``--rate`` per second for
``--seconds`` (open loop: each at its planned time, whether or not earlier ones have
answered), stops by itself, and prints per request kind the answered count, a status
histogram and p50 / p90 / p99 latency, how many streams stayed open, and the API
process's memory (RSS) before and after. Kinds: status reads (60%), cache hits (25%),
new submissions (15%, links that answer 404 at once, so their checks fail fast).
Submission rate limits are raised for the run (they are tested on their own); the
limit on failed logins stays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extension_api.tokens import create  # noqa: E402
from stack.local import free_port, start_redis, stop_all, wait_for_port  # noqa: E402

PHOTO = ROOT.parent / "shared" / "media" / "unlabeled" / "obama.jpg"
MIX = [("status", 0.60), ("cache-hit", 0.25), ("submit", 0.15)]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def media_server(photo: bytes, hold_s: float):
    """/photo.jpg answers at once; /hold.jpg holds the download (a check that stays running);
    anything else is 404."""
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/hold"):
                time.sleep(hold_s)
            if self.path.startswith(("/photo", "/hold")):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(photo)))
                self.end_headers()
                self.wfile.write(photo)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


async def hold_stream(s: aiohttp.ClientSession, base: str, token: str, job_id: str, state: dict) -> None:
    try:
        async with s.get(f"{base}/v1/checks/{job_id}/events", headers={"Authorization": f"Bearer {token}"},
                         timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
            state["status"][r.status] += 1
            if r.status != 200:
                return
            state["open"] += 1
            async for _ in r.content:
                pass
    except (aiohttp.ClientError, asyncio.CancelledError):
        pass


async def run_load(base: str, tokens: list[str], rate: float, seconds: float, streams: int, held_job: str,
                   done_job: str, photo_url: str, media: str) -> dict:
    results: dict[str, list] = {k: [] for k, _ in MIX}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
        sstate = {"open": 0, "status": Counter()}
        holders = [asyncio.create_task(hold_stream(s, base, tokens[i // 8], held_job, sstate))
                   for i in range(streams)]
        await asyncio.sleep(3)
        opened = sstate["open"]

        async def one(i: int, kind: str) -> None:
            token = tokens[i % len(tokens)]
            h = {"Authorization": f"Bearer {token}"}
            t = time.perf_counter()
            try:
                if kind == "status":
                    coro = s.get(f"{base}/v1/checks/{done_job}", headers=h)
                elif kind == "cache-hit":
                    coro = s.post(f"{base}/v1/checks", headers=h, json={"url": photo_url})
                else:
                    coro = s.post(f"{base}/v1/checks", headers=h, json={"url": f"{media}/missing/{i}.mp4"})
                async with coro as r:
                    await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError) as e:
                status = type(e).__name__
            results[kind].append((status, (time.perf_counter() - t) * 1000))

        n = int(rate * seconds)
        t0 = time.perf_counter()
        tasks = []
        weights = [w for _, w in MIX]
        acc = [0.0] * len(MIX)
        for i in range(n):
            for k, w in enumerate(weights):  # a deterministic interleaving in the mix's proportions
                acc[k] += w
            k = max(range(len(MIX)), key=acc.__getitem__)
            acc[k] -= 1.0
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, MIX[k][0])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        still = sum(1 for h in holders if not h.done())
        for h in holders:
            h.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    return {"results": results, "elapsed": elapsed, "streams_opened": opened, "streams_open_at_end": still,
            "stream_status": dict(sstate["status"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--streams", type=int, default=200)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="df-load-"))
    procs = []
    srv = None
    try:
        rproc, redis_url = start_redis(tmp / "redis")
        procs.append(rproc)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, REDIS_URL=redis_url, DEEPFAKE_DATA_DIR=str(tmp / "data"),
                   DEEPFAKE_ALLOW_PRIVATE_HOSTS=json.dumps(["127.0.0.1"]), DEEPFAKE_PUBLIC_URL=base,
                   DEEPFAKE_RATE_LIMIT_PER_MIN="1000000", DEEPFAKE_READ_RATE_LIMIT_PER_MIN="1000000",
                   DEEPFAKE_RETRY_BACKOFF_S="0.1", DEEPFAKE_MAX_RETRIES="0",
                   # the held check's download outlasts the run (its streams stay open throughout)
                   DEEPFAKE_FETCH_TIMEOUT_S=str(a.seconds + 120), DEEPFAKE_FETCH_SOFT_LIMIT_S=str(int(a.seconds) + 150),
                   DEEPFAKE_FETCH_HARD_LIMIT_S=str(int(a.seconds) + 180))
        wlog = open(tmp / "worker.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                                       "-Q", "fetch,analyze", "-c", "2", "--loglevel", "WARNING"],
                                      env=env, cwd=ROOT, stdout=wlog, stderr=subprocess.STDOUT))
        api = subprocess.Popen([sys.executable, "-m", "extension_api.app", "--port", str(port)], env=env,
                               cwd=ROOT, stdout=open(tmp / "api.log", "w"), stderr=subprocess.STDOUT)
        procs.append(api)
        wait_for_port("127.0.0.1", port, api, "the API")
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        tokens = [create(r, f"load-{i}") for i in range(max(1, -(-a.streams // 8)))]
        srv, mport = media_server(PHOTO.read_bytes(), hold_s=a.seconds + 60)
        media = f"http://127.0.0.1:{mport}"
        time.sleep(8)  # the worker's pool loads its models
        h0 = {"Authorization": f"Bearer {tokens[0]}"}
        done = requests.post(f"{base}/v1/checks", json={"url": media + "/photo.jpg"}, headers=h0, timeout=30).json()
        while done["state"] not in ("done", "failed"):
            time.sleep(0.2)
            done = requests.get(f"{base}/v1/checks/{done['id']}", headers=h0, timeout=10).json()
        held = None
        for t in tokens:  # every token asks for both checks, so each may read and follow them
            requests.post(f"{base}/v1/checks", json={"url": media + "/photo.jpg"},
                          headers={"Authorization": f"Bearer {t}"}, timeout=30)
            held = requests.post(f"{base}/v1/checks", json={"url": media + "/hold.jpg"},
                                 headers={"Authorization": f"Bearer {t}"}, timeout=30).json()["id"]
        before = rss_mb(api.pid)
        out = asyncio.run(run_load(base, tokens, a.rate, a.seconds, a.streams, held, done["id"],
                                   media + "/photo.jpg", media))
        after = rss_mb(api.pid)
        print(f"{a.rate:.0f} req/s planned for {a.seconds:.0f} s, sent in {out['elapsed']:.1f} s; "
              f"{a.streams} event streams asked for: {out['streams_opened']} open after 3 s, "
              f"{out['streams_open_at_end']} still open at the end (answers: {out['stream_status']})")
        print(f"{'kind':<10} {'answered':>8}  {'statuses':<40} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
        errors = 0
        for kind, rows in out["results"].items():
            hist = Counter(str(st) for st, _ in rows)
            ms = [m for _, m in rows]
            errors += sum(v for k, v in hist.items() if not k.isdigit() or k.startswith("5"))
            print(f"{kind:<10} {len(rows):>8}  {', '.join(f'{k}: {v}' for k, v in sorted(hist.items())):<40} "
                  f"{pct(ms, .5):>8.1f} {pct(ms, .9):>8.1f} {pct(ms, .99):>8.1f}")
        print(f"errors (5xx or no answer): {errors}; API memory {before:.0f} MB before, {after:.0f} MB after")
    finally:
        if srv is not None:
            srv.shutdown()
        stop_all(procs)


if __name__ == "__main__":
    main()
