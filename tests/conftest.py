from __future__ import annotations

import contextlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("DEEPFAKE_SHARED", ROOT.parent / "shared"))
MESONET = SHARED / "weights" / "mesonet"
UNLABELED = SHARED / "media" / "unlabeled"
DEVSET = SHARED / "media" / "devset"

# The pipeline, service and bot tests score with the four public MesoNet members (../shared,
# a few ms a face), not with the default ensemble (detector/manifest.json's rule): what they
# test is the way through, not the number. Their subprocesses inherit it. The shipped default
# is tested with its own weights in test_shipped_members.py, which names its members.
MESONET_MEMBERS = "meso4-df,meso4-f2f,mesoinception4-df,mesoinception4-f2f"
os.environ.setdefault("DEEPFAKE_MEMBERS", MESONET_MEMBERS)


def shared(*parts: str) -> Path:
    """A path under ../shared; the calling test is skipped when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs ../shared ({p} is absent)")
    return p


@pytest.fixture(scope="session")
def mesonet_store(tmp_path_factory):
    """A weights cache holding the four public MesoNet members, sha256-verified."""
    from detector.manifest import load_manifest
    from detector.weights import WeightStore

    src = shared("weights", "mesonet")
    store = WeightStore(tmp_path_factory.mktemp("weights"))
    done = store.import_dir(src, load_manifest().members)
    assert len(done) == 4
    return store


@pytest.fixture(scope="session")
def analyzer(mesonet_store):
    from detector.pipeline import Analyzer
    from detector.settings import DetectorSettings

    settings = DetectorSettings(weights_dir=mesonet_store.root, frames_per_shot_cpu=8,
                                allow_private_hosts=["127.0.0.1"])
    return Analyzer(settings, device="cpu").load()


class LoopbackServer:
    """An HTTP server on 127.0.0.1 with fixed routes, recording every request path."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.delays: dict[str, float] = {}  # seconds to wait before answering a path
        self.sequences: dict[str, list] = {}  # answers given once each, in order, before the route's
        self.requests: list[str] = []
        self.full_requests: list[str] = []  # with the query string
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                server.full_requests.append(self.path)
                status, headers, body = server.routes.get(path, (404, {"Content-Type": "text/plain"}, b"nope"))
                if server.sequences.get(path):
                    status, headers, body = server.sequences[path].pop(0)
                if path in server.delays:
                    import time

                    time.sleep(server.delays[path])
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback():
    srv = LoopbackServer()
    yield srv
    srv.close()


# -- the service: real redis-server, Celery worker and API processes ------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, what: str, timeout: float = 90.0, proc=None, log=None):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-3000:] if log else ''}")
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready:\n{log.read_text()[-3000:] if log else ''}")


class Service:
    def __init__(self, base: str, redis_url: str, env: dict, data_dir: Path, worker_log: Path, worker_pid: int):
        self.base, self.redis_url, self.env, self.data_dir, self.worker_log = base, redis_url, env, data_dir, worker_log
        self.worker_pid = worker_pid
        self.workers: list = []
        import redis

        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)

    def start_worker(self):
        """A Celery worker (its own process group, so the whole of it can be killed)."""
        import subprocess
        import sys

        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                                 "-Q", "fetch,analyze", "-c", "2", "--loglevel", "INFO", "-n", "test@%h"],
                                env=self.env, cwd=ROOT, stdout=open(self.worker_log, "a"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        self.worker_pid = proc.pid
        return proc

    def restart_redis(self, down_s: float) -> None:
        """Stop redis-server (it writes its append-only file), wait, start it again on its port."""
        import subprocess

        old = next(p for p in self.procs if getattr(p, "args", None) == self.redis_cmd)
        old.terminate()
        old.wait(timeout=10)
        time.sleep(down_s)
        new = subprocess.Popen(self.redis_cmd, stdout=subprocess.DEVNULL)
        self.procs[self.procs.index(old)] = new
        self.redis_cmd = new.args
        _wait_for(lambda: _ping(self.redis), "redis-server again", proc=new)

    def token(self, name: str) -> str:
        from extension_api.tokens import create

        return create(self.redis, name)


@pytest.fixture(scope="session")
def service(mesonet_store, tmp_path_factory):
    """One stack for the session. Its caches are shared: a test that must see the analysis run
    (not a cache hit) checks a clip no other test checks, and each client uses its own token."""
    with run_stack(tmp_path_factory.mktemp("service"), mesonet_store) as svc:
        yield svc


@contextlib.contextmanager
def run_stack(tmp: Path, mesonet_store, *, redis_persist: bool = False, **env_overrides: str):
    """redis-server, a Celery worker (fetch + analyze, 2 processes) and the API, on loopback.
    ``redis_persist``: Redis keeps its data in an append-only file, so it can be restarted
    (``Service.restart_redis``) as a production Redis would be."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import requests

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    procs = []
    rport, aport = _free_port(), _free_port()
    redis_cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "", "--dir", str(tmp),
                 *(["--appendonly", "yes", "--appendfsync", "always"] if redis_persist else ["--appendonly", "no"])]
    redis_proc = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
    procs.append(redis_proc)
    redis_url = f"redis://127.0.0.1:{rport}/0"
    import redis

    _wait_for(lambda: _ping(redis.Redis.from_url(redis_url)), "redis-server", proc=redis_proc)
    env = dict(os.environ)
    env.update(REDIS_URL=redis_url, DEEPFAKE_DATA_DIR=str(tmp / "data"),
               DEEPFAKE_WEIGHTS_DIR=str(mesonet_store.root), DEEPFAKE_FRAMES_PER_SHOT_CPU="4",
               # 4 frames a shot (for speed) leave some clips 1-2 face frames: the gate's
               # frame rule is tested on its own (test_calibration_gate), not through the bots.
               DEEPFAKE_GATE_MIN_FACE_FRAMES="1",
               DEEPFAKE_ALLOW_PRIVATE_HOSTS=json.dumps(["127.0.0.1"]),
               DEEPFAKE_PUBLIC_URL=f"http://127.0.0.1:{aport}", DEEPFAKE_RATE_LIMIT_PER_MIN="8",
               DEEPFAKE_RETRY_BACKOFF_S="0.2", DEEPFAKE_MAX_DURATION_S="30", PYTHONUNBUFFERED="1",
               DEEPFAKE_HEADER_TIMEOUT_S="2")
    env.update(env_overrides)
    worker_log = tmp / "worker.log"
    api_log = tmp / "api.log"
    api = subprocess.Popen([sys.executable, "-m", "extension_api.app", "--port", str(aport)], env=env, cwd=ROOT,
                           stdout=open(api_log, "w"), stderr=subprocess.STDOUT)
    procs.append(api)
    svc = Service(f"http://127.0.0.1:{aport}", redis_url, env, tmp / "data", worker_log, 0)
    svc.redis_cmd, svc.procs = redis_cmd, procs
    try:
        worker = svc.start_worker()
        _wait_for(lambda: _get_ok(requests, svc.base + "/healthz"), "the API", proc=api, log=api_log)
        _wait_for(lambda: " ready." in worker_log.read_text(), "the Celery worker", proc=worker, log=worker_log)
        yield svc
    finally:
        from stack.local import stop_all

        stop_all(procs + svc.workers)


def _ping(r) -> bool:
    try:
        return bool(r.ping())
    except Exception:
        return False


def _get_ok(requests, url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def two_people_video(tmp_path_factory):
    """A 4-shot video made from shared photos of two people in alternating shots: Obama
    (obama.jpg), Biden, Obama again (another photo, obama3.jpg), Biden mirrored; 2 s each."""
    import numpy as np
    from PIL import Image

    from detector.demo import make_multishot_video

    def photo(name):
        return np.asarray(Image.open(shared("media", "unlabeled", name)).convert("RGB"))

    biden = photo("biden.jpg")
    return make_multishot_video([photo("obama.jpg"), biden, photo("obama3.jpg"), biden[:, ::-1]],
                                tmp_path_factory.mktemp("people") / "two_people_4shots.mp4",
                                seconds_per_shot=2.0, fps=25, size=(640, 480))
