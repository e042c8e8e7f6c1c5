from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("DEEPFAKE_SHARED", ROOT.parent / "shared"))
MESONET = SHARED / "weights" / "mesonet"
UNLABELED = SHARED / "media" / "unlabeled"
DEVSET = SHARED / "media" / "devset"


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
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                status, headers, body = server.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"nope"))
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
