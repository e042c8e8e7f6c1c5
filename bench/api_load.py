"""Latency of the service on loopback, with a real redis-server, worker and API.

    python bench/api_load.py [--requests 400] [--concurrency 16] [--clip PATH]

Prints: the end-to-end time of one clip through the stack (submit -> done, with the
time to each stage), the cache-hit latency of re-submitting it, and submit / status
latency percentiles under concurrent load. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extension_api.tokens import create  # noqa: E402
from stack.local import free_port, start_redis, stop_all, wait_for_port  # noqa: E402

DEFAULT_CLIP = ROOT.parent / "shared" / "media" / "devset" / "videos" / "anchor_fake.mp4"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(name: str, ms: list[float]) -> str:
    return (f"{name:<28} n={len(ms):<5} p50 {pct(ms, .5):7.2f} ms  p95 {pct(ms, .95):7.2f} ms  "
            f"p99 {pct(ms, .99):7.2f} ms  max {max(ms):7.2f} ms")


def serve_file(data: bytes) -> tuple[ThreadingHTTPServer, int]:
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/clip.mp4"):
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


async def load(base: str, token: str, n: int, conc: int, media_port: int, job_id: str):
    headers = {"Authorization": f"Bearer {token}"}
    sem = asyncio.Semaphore(conc)
    submit_ms, status_ms = [], []
    async with aiohttp.ClientSession() as s:
        async def one_submit(i):
            async with sem:
                t = time.perf_counter()
                async with s.post(f"{base}/v1/checks", headers=headers,
                                  json={"url": f"http://127.0.0.1:{media_port}/missing/{i}.mp4"}) as r:
                    await r.read()
                    assert r.status == 202, r.status
                submit_ms.append((time.perf_counter() - t) * 1000)

        async def one_status(_):
            async with sem:
                t = time.perf_counter()
                async with s.get(f"{base}/v1/checks/{job_id}", headers=headers) as r:
                    await r.read()
                    assert r.status == 200
                status_ms.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_submit(i) for i in range(n)))
        t_sub = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(*(one_status(i) for i in range(n)))
        t_st = time.perf_counter() - t0
    return submit_ms, status_ms, n / t_sub, n / t_st


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="df-bench-"))
    procs = []
    try:
        rproc, redis_url = start_redis(tmp / "redis")
        procs.append(rproc)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, REDIS_URL=redis_url, DEEPFAKE_DATA_DIR=str(tmp / "data"),
                   DEEPFAKE_ALLOW_PRIVATE_HOSTS=json.dumps(["127.0.0.1"]), DEEPFAKE_PUBLIC_URL=base,
                   DEEPFAKE_RATE_LIMIT_PER_MIN="1000000", DEEPFAKE_READ_RATE_LIMIT_PER_MIN="1000000",
                   DEEPFAKE_RETRY_BACKOFF_S="0.1")
        wlog = open(tmp / "worker.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                                       "-Q", "fetch,analyze", "-c", "2", "--loglevel", "WARNING"],
                                      env=env, cwd=ROOT, stdout=wlog, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([sys.executable, "-m", "extension_api.app", "--port", str(port)], env=env,
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port("127.0.0.1", port, procs[-1], "the API")
        token = create(redis.Redis.from_url(redis_url, decode_responses=True), "bench")
        headers = {"Authorization": f"Bearer {token}"}
        srv, media_port = serve_file(a.clip.read_bytes())
        time.sleep(8)  # let the worker's pool load its models (after fork)

        url = f"http://127.0.0.1:{media_port}/clip.mp4"
        t0 = time.time()
        job = requests.post(f"{base}/v1/checks", json={"url": url}, headers=headers, timeout=30).json()
        while job["state"] not in ("done", "failed"):
            time.sleep(0.05)
            job = requests.get(f"{base}/v1/checks/{job['id']}", headers=headers, timeout=10).json()
        total = time.time() - t0
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        firsts: dict[str, float] = {}
        for _, ev in r.xrange(f"df:events:{job['id']}"):
            firsts.setdefault(ev["stage"], float(ev["ts"]) - t0)
        print(f"end to end: {a.clip.name} through the stack in {total:.2f} s ({job['state']}, "
              f"score {job.get('report', {}).get('score')})")
        print("  first event of each stage (s after submit): "
              + ", ".join(f"{k} {v:.2f}" for k, v in firsts.items()))

        hits = []
        for _ in range(200):
            t = time.perf_counter()
            resp = requests.post(f"{base}/v1/checks", json={"url": url}, headers=headers, timeout=10)
            hits.append((time.perf_counter() - t) * 1000)
            assert resp.status_code == 200 and resp.json()["seen_before"]
        print(summary("cache hit (same link)", hits))

        sub, st, sub_rps, st_rps = asyncio.run(load(base, token, a.requests, a.concurrency, media_port, job["id"]))
        print(summary(f"submit, {a.concurrency} concurrent", sub) + f"  {sub_rps:6.0f} req/s")
        print(summary(f"status, {a.concurrency} concurrent", st) + f"  {st_rps:6.0f} req/s")
        print(f"(median of cache hits {statistics.median(hits):.2f} ms)")
        srv.shutdown()
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
