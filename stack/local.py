"""``deepfake-serve``: the whole service on one machine, in one command.

Starts a private ``redis-server`` (unless ``REDIS_URL`` names one), a Celery worker for
both queues, the API, and each chat bot whose token is configured (``TELEGRAM_BOT_TOKEN``,
``SLACK_BOT_TOKEN``). Prints where the API and the report pages are; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from worker.settings import ServiceSettings

PRIVATE_REDIS_PORT = 6390  # stable, so `REDIS_URL=redis://127.0.0.1:6390/0 deepfake-token ...` works


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A private redis-server on 127.0.0.1 with AOF persistence in ``folder``."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (scripts/setup.sh installs it), or set REDIS_URL")
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
                             "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_port("127.0.0.1", port, proc, "redis-server")
    return proc, url


def wait_for_port(host: str, port: int, proc: subprocess.Popen | None = None, what: str = "service",
                  timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start listening on {host}:{port}")


def stop_all(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM each process (last started first), then wait; kill what does not stop."""
    for pr in reversed(procs):
        if pr.poll() is None:
            pr.send_signal(signal.SIGTERM)
    for pr in reversed(procs):
        try:
            pr.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pr.kill()


def start_worker(env: dict[str, str], queues: str = "fetch,analyze", concurrency: int = 2) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                             "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO",
                             "-n", f"deepfake-{os.getpid()}@%h"], env=env)


BOTS = [("telegram", "bots.telegram_bot"), ("slack", "bots.slack_bot")]  # started when <NAME>_BOT_TOKEN is set


def bot_token(redis_url: str, name: str) -> str:
    """A fresh API token for a bot started by this stack (replacing its previous one)."""
    import redis

    from extension_api.tokens import create

    return create(redis.Redis.from_url(redis_url, decode_responses=True), name)


def local_token(redis_url: str) -> str | None:
    """A token named 'local' for this machine, created (and returned) only if none exists."""
    import redis

    from extension_api.tokens import create
    from worker import keys

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    if r.exists(keys.token_name_key("local")):
        return None
    return create(r, "local")


def demo(base: str, token: str, redis_url: str) -> None:
    """Upload the built-in demo video, wait for its report, print the result and the page."""
    import requests

    from detector.demo import demo_video
    from detector.settings import DetectorSettings
    from detector.vocabulary import TERMINAL, State

    if not token:  # 'local' existed before: make a short-lived one for the demo
        import redis

        from extension_api.tokens import create

        token = create(redis.Redis.from_url(redis_url, decode_responses=True), "demo")
    path = demo_video(DetectorSettings().cache_dir / "demo")
    headers = {"Authorization": f"Bearer {token}"}
    with open(path, "rb") as f:
        r = requests.post(f"{base}/v1/checks", headers=headers, files={"file": (path.name, f, "video/mp4")},
                          timeout=60)
    r.raise_for_status()
    job = r.json()
    print(f"demo:    checking {path.name} as job {job['id']} ...")
    while job["state"] not in TERMINAL:
        time.sleep(0.5)
        job = requests.get(f"{base}/v1/checks/{job['id']}", headers=headers, timeout=10).json()
    if job["state"] == State.FAILED:
        print(f"demo:    failed: {job['problem']['detail']}")
        return
    rep = job["report"]
    print(f"demo:    {rep['verdict_label']} ({rep['score'] * 100:.1f}%), {len(rep['shots'])} shots")
    print(f"demo:    report page {job['links']['report_page']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--concurrency", type=int, default=2, help="worker processes")
    p.add_argument("--demo", action="store_true",
                   help="once up, check the built-in demo video through the API and print its report page")
    a = p.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the clean-up below on SIGTERM too
    # Ctrl-C stops it even where it was started with SIGINT ignored (a background job of a
    # non-interactive shell inherits SIG_IGN, and Python then installs no handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    settings = ServiceSettings()
    try:
        if not (os.environ.get("REDIS_URL") or os.environ.get("DEEPFAKE_REDIS_URL")):
            redis_proc, url = start_redis(settings.data_dir / "redis", PRIVATE_REDIS_PORT
                                          if port_free(PRIVATE_REDIS_PORT) else None)
            procs.append(redis_proc)
            env["REDIS_URL"] = url
            print(f"redis:   {url} (private, data in {settings.data_dir / 'redis'})")
        env.setdefault("DEEPFAKE_PUBLIC_URL", f"http://{a.host}:{a.port}")
        procs.append(start_worker(env, concurrency=a.concurrency))
        api = subprocess.Popen([sys.executable, "-m", "extension_api.app", "--host", a.host,
                                "--port", str(a.port)], env=env)
        procs.append(api)
        wait_for_port(a.host, a.port, api, "the API")
        base = env["DEEPFAKE_PUBLIC_URL"]
        stack_file = settings.stack_file()
        stack_file.parent.mkdir(parents=True, exist_ok=True)
        stack_file.write_text(json.dumps({"redis_url": env["REDIS_URL"] if "REDIS_URL" in env
                                          else settings.redis_url, "api": base, "pid": os.getpid()}))
        print(f"API:     {base}/v1/checks   (a token for a client: deepfake-token create NAME)")
        print(f"reports: {base}/r/<job id>      model card: {base}/v1/model-card")
        redis_url = env["REDIS_URL"] if "REDIS_URL" in env else settings.redis_url
        for name, module in BOTS:
            if os.environ.get(f"{name.upper()}_BOT_TOKEN"):
                bot_env = dict(env, DEEPFAKE_API_URL=base)
                bot_env.setdefault("DEEPFAKE_API_TOKEN", bot_token(redis_url, f"{name}-bot"))
                procs.append(subprocess.Popen([sys.executable, "-m", module], env=bot_env))
                print(f"{name}: started ({module})")
        token = local_token(redis_url)
        if token:
            print(f"token:   {token}   (name 'local'; shown once, stored hashed)")
        else:
            print("token:   'local' exists already; `deepfake-token create local` replaces it")
        if a.demo:
            demo(base, token or "", env["REDIS_URL"])
        print("Ctrl-C stops everything.")
        while all(pr.poll() is None for pr in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(procs)
        stack_file = settings.stack_file()
        try:
            if json.loads(stack_file.read_text()).get("pid") == os.getpid():
                stack_file.unlink()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
