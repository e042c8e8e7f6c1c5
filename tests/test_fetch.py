"""Fetch and the private-address guard, against real HTTP servers on 127.0.0.1."""

from pathlib import Path

import pytest

from detector.errors import NotAMedium, NotFound, PrivateAddress, TooLarge, Unreachable, UnsupportedURL
from detector.fetch import fetch, sha256_file
from detector.netguard import check_url, is_public_ip
from detector.settings import DetectorSettings

from .conftest import shared

ALLOW = DetectorSettings(allow_private_hosts=["127.0.0.1"])
GUARDED = DetectorSettings()


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                  "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "224.0.0.1",
                                  "::ffff:192.168.0.1"])
def test_private_addresses_are_refused(addr):
    assert not is_public_ip(addr)
    host = f"[{addr}]" if ":" in addr else addr
    with pytest.raises(PrivateAddress):
        check_url(f"http://{host}/video.mp4")


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass_the_decision(addr):
    assert is_public_ip(addr)


@pytest.mark.parametrize("url", ["ftp://example.org/a.mp4", "file:///etc/passwd", "javascript:alert(1)",
                                 "http://user:pw@127.0.0.1/a.mp4"])
def test_unsupported_schemes(url):
    with pytest.raises(UnsupportedURL):
        check_url(url, ["127.0.0.1"])


def test_guard_stops_before_any_request(loopback, tmp_path):
    loopback.routes["/clip.mp4"] = (200, {"Content-Type": "video/mp4"}, b"x" * 100)
    with pytest.raises(PrivateAddress):
        fetch(loopback.url("/clip.mp4"), tmp_path, GUARDED)
    assert loopback.requests == []  # the loopback server was never reached


def test_redirect_to_a_private_address_is_refused(loopback, tmp_path):
    loopback.routes["/r"] = (302, {"Location": "http://10.255.255.1/secret.mp4"}, b"")
    with pytest.raises(PrivateAddress):
        fetch(loopback.url("/r"), tmp_path, ALLOW)
    assert loopback.requests == ["/r"]


def test_direct_media_download(loopback, tmp_path):
    body = shared("media", "unlabeled", "obama.jpg").read_bytes()
    loopback.routes["/photo"] = (200, {"Content-Type": "image/jpeg"}, body)
    loopback.routes["/go"] = (301, {"Location": "/photo"}, b"")
    got = fetch(loopback.url("/go"), tmp_path, ALLOW)
    assert got.via == "http" and got.path.read_bytes() == body
    assert got.sha256 == sha256_file(shared("media", "unlabeled", "obama.jpg"))
    assert got.url.endswith("/photo") and got.path.suffix == ".jpg"


def test_dead_links(loopback, tmp_path):
    with pytest.raises(NotFound):
        fetch(loopback.url("/missing.mp4"), tmp_path, ALLOW)
    loopback.routes["/err"] = (503, {"Content-Type": "text/plain"}, b"busy")
    with pytest.raises(Unreachable) as e:
        fetch(loopback.url("/err"), tmp_path, ALLOW)
    assert e.value.transient
    port = loopback.port
    loopback.close()
    with pytest.raises(Unreachable):
        fetch(f"http://127.0.0.1:{port}/gone.mp4", tmp_path, ALLOW)


def test_unresolvable_host(tmp_path):
    with pytest.raises(Unreachable):
        fetch("http://no-such-host.invalid/a.mp4", tmp_path, ALLOW)


def test_not_a_medium(loopback, tmp_path):
    loopback.routes["/data.json"] = (200, {"Content-Type": "application/json"}, b"{}")
    with pytest.raises(NotAMedium):
        fetch(loopback.url("/data.json"), tmp_path, ALLOW)
    loopback.routes["/page"] = (200, {"Content-Type": "text/html"}, b"<html><body>no media here</body></html>")
    with pytest.raises(NotAMedium):
        fetch(loopback.url("/page"), tmp_path, ALLOW)


def test_too_large_by_header_and_by_stream(loopback, tmp_path):
    small = DetectorSettings(allow_private_hosts=["127.0.0.1"], max_bytes=1000)
    loopback.routes["/big"] = (200, {"Content-Type": "video/mp4"}, b"x" * 5000)
    with pytest.raises(TooLarge):
        fetch(loopback.url("/big"), tmp_path / "a", small)
    # A server that hides the length: the download stops at the limit.
    loopback.routes["/sneaky"] = (200, {"Content-Type": "video/mp4", "Content-Length": "10"}, b"x" * 10)
    ok = fetch(loopback.url("/sneaky"), tmp_path / "b", small)
    assert ok.size_bytes == 10
    loopback.routes["/chunked"] = (200, {"Content-Type": "video/mp4", "Connection": "close",
                                         "Content-Length": ""}, b"x" * 5000)
    with pytest.raises(TooLarge):
        fetch(loopback.url("/chunked"), tmp_path / "c", small)
    assert not list((tmp_path / "c").glob("media*"))  # the partial file is deleted


def test_local_files(tmp_path):
    with pytest.raises(NotFound):
        fetch(str(tmp_path / "nope.mp4"), tmp_path)
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc" * 1000)
    with pytest.raises(TooLarge):
        fetch(str(f), tmp_path, DetectorSettings(max_bytes=100))
    got = fetch(str(f), tmp_path)
    assert got.via == "file" and got.size_bytes == 3000 and got.path == f


def test_web_page_with_embedded_video_goes_through_ytdlp(loopback, tmp_path):
    clip = shared("media", "devset", "videos", "film_real.mp4").read_bytes()
    loopback.routes["/media/film.mp4"] = (200, {"Content-Type": "video/mp4"}, clip)
    page = (b"<html><head><title>A post</title></head><body>"
            b"<video controls><source src=\"/media/film.mp4\" type=\"video/mp4\"></video></body></html>")
    loopback.routes["/post/1"] = (200, {"Content-Type": "text/html; charset=utf-8"}, page)
    got = fetch(loopback.url("/post/1"), tmp_path, ALLOW)
    assert got.via == "yt-dlp"
    assert Path(got.path).read_bytes() == clip
    assert "/media/film.mp4" in loopback.requests


def test_connection_level_guard_catches_a_name_that_rebinds(loopback, tmp_path, monkeypatch):
    """DNS rebinding: the name first resolves to a public address, then to 127.0.0.1."""
    import socket

    loopback.routes["/clip.mp4"] = (200, {"Content-Type": "video/mp4"}, b"x" * 100)
    real = socket.getaddrinfo
    answers = {"n": 0}

    def rebinding_resolver(host, port, *args, **kwargs):  # a TTL-0 attacker's DNS server
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        answers["n"] += 1
        ip = "93.184.216.34" if answers["n"] == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_resolver)
    with pytest.raises(PrivateAddress, match="connected to a private address"):
        fetch(f"http://rebind.test:{loopback.port}/clip.mp4", tmp_path, GUARDED)
    assert answers["n"] == 2
    assert loopback.requests == []  # connected, then closed before any request was sent


# -- SSRF through web pages and IPv6 forms (issue 12, items 1 and 2) --------------------------

@pytest.mark.parametrize("addr", [
    "::127.0.0.1",           # IPv4-compatible
    "::ffff:0:7f00:1",       # IPv4-translated
    "2002:7f00:1::",         # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",      # 6to4 of the cloud metadata address
    "64:ff9b::7f00:1",       # NAT64 well-known prefix
    "64:ff9b::a00:1",        # NAT64 of 10.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use prefix
    "fec0::1",               # site-local
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "::",
])
def test_ipv6_forms_that_embed_or_reach_private_ranges_are_refused(addr):
    assert not is_public_ip(addr)
    with pytest.raises(PrivateAddress):
        check_url(f"http://[{addr}]/video.mp4")


@pytest.mark.parametrize("addr", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_forms_of_public_addresses_pass(addr):
    assert is_public_ip(addr)


def test_allow_entries_can_name_a_port():
    from detector.netguard import is_allowed

    assert is_allowed(["127.0.0.1:8080"], "127.0.0.1", 8080)
    assert not is_allowed(["127.0.0.1:8080"], "127.0.0.1", 8081)
    assert is_allowed(["127.0.0.1"], "127.0.0.1", 1)
    assert is_allowed(["[::1]:99"], "::1", 99) and not is_allowed(["[::1]:99"], "::1", 98)
    assert is_allowed(["::1"], "::1", 5)


class _Canary:
    """A server on a private address that must never be reached: records every hit."""

    def __init__(self, family_host: str, body: bytes):
        import socket
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                canary.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in family_host else socket.AF_INET

        self.httpd = Server((family_host, 0), Handler)
        self.port = self.httpd.server_address[1]
        host = f"[{family_host}]" if ":" in family_host else family_host
        self.base = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def canaries():
    clip = shared("media", "devset", "videos", "film_real.mp4").read_bytes()
    made = [_Canary("127.0.0.1", clip), _Canary("::1", clip)]
    yield {"v4": made[0], "v6": made[1]}
    for c in made:
        c.close()


PAGE_FORMS = {
    "video-src": '<video src="{url}/v.mp4"></video>',
    "source": '<video controls><source src="{url}/v.mp4" type="video/mp4"></video>',
    "og-video": '<meta property="og:video" content="{url}/v.mp4"><meta property="og:title" content="x">',
    "json-ld": ('<script type="application/ld+json">{{"@context": "https://schema.org", "@type": "VideoObject", '
                '"name": "x", "contentUrl": "{url}/v.mp4"}}</script>'),
    "twitter-stream": '<meta name="twitter:player:stream" content="{url}/v.mp4">',
}


@pytest.mark.parametrize("form", sorted(PAGE_FORMS))
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_a_public_page_cannot_make_ytdlp_fetch_a_private_address(loopback, canaries, tmp_path, form, family):
    canary = canaries[family]
    html = f"<html><head><title>post</title>{PAGE_FORMS[form].format(url=canary.base)}</head><body></body></html>"
    loopback.routes["/post"] = (200, {"Content-Type": "text/html"}, html.encode())
    # The page's host (this port only) is allowed, as a public site would be; the canary is not.
    settings = DetectorSettings(allow_private_hosts=[f"127.0.0.1:{loopback.port}"])
    with pytest.raises(PrivateAddress, match="connect to a private address"):
        fetch(loopback.url("/post"), tmp_path, settings)
    assert canary.hits == []
    assert not any(tmp_path.glob("media.*"))


def test_the_canary_is_reached_when_allowed(loopback, canaries, tmp_path):
    """Control for the test above: the same page does fetch from the canary when it is allowed."""
    canary = canaries["v4"]
    html = f"<html><head><title>post</title>{PAGE_FORMS['source'].format(url=canary.base)}</head></html>"
    loopback.routes["/post"] = (200, {"Content-Type": "text/html"}, html.encode())
    settings = DetectorSettings(allow_private_hosts=[f"127.0.0.1:{loopback.port}", f"127.0.0.1:{canary.port}"])
    got = fetch(loopback.url("/post"), tmp_path, settings)
    assert got.via == "yt-dlp" and canary.hits


def test_hls_fragments_on_a_private_address_are_refused(loopback, canaries, tmp_path):
    """The manifest is on the allowed host; its segments point at the canary."""
    canary = canaries["v4"]
    playlist = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:4.0,\n{canary.base}/seg0.ts\n#EXTINF:4.0,\n{canary.base}/seg1.ts\n#EXT-X-ENDLIST\n")
    loopback.routes["/hls/index.m3u8"] = (200, {"Content-Type": "application/vnd.apple.mpegurl"}, playlist.encode())
    html = '<html><head><title>post</title></head><body><video src="/hls/index.m3u8"></video></body></html>'
    loopback.routes["/post"] = (200, {"Content-Type": "text/html"}, html.encode())
    settings = DetectorSettings(allow_private_hosts=[f"127.0.0.1:{loopback.port}"])
    with pytest.raises(PrivateAddress):
        fetch(loopback.url("/post"), tmp_path, settings)
    assert "/hls/index.m3u8" in loopback.requests  # the manifest was read: the refusal is the segments'
    assert canary.hits == []


# -- fetch failures that once froze jobs (issue 15): each is a typed problem -----------------

@pytest.mark.parametrize("target", ["http://127.0.0.1:99999/v.mp4", "http://[::1:8335/v.mp4", "file:///etc/passwd"])
def test_a_redirect_to_a_broken_address_is_a_typed_problem(loopback, tmp_path, target):
    loopback.routes["/r"] = (302, {"Location": target}, b"")
    with pytest.raises(UnsupportedURL):
        fetch(loopback.url("/r"), tmp_path, ALLOW)


def test_a_redirect_loop_fails_at_once_and_is_not_retried(loopback, tmp_path):
    loopback.routes["/a"] = (302, {"Location": "/b"}, b"")
    loopback.routes["/b"] = (302, {"Location": "/a"}, b"")
    with pytest.raises(NotFound, match="redirect loop") as e:
        fetch(loopback.url("/a"), tmp_path, ALLOW)
    assert not e.value.transient
    loopback.routes["/nowhere"] = (302, {}, b"")  # a redirect without a Location
    with pytest.raises(NotFound):
        fetch(loopback.url("/nowhere"), tmp_path, ALLOW)


def test_a_garbled_content_length_does_not_break_the_download(loopback, tmp_path):
    body = shared("media", "unlabeled", "obama.jpg").read_bytes()
    loopback.routes["/p.jpg"] = (200, {"Content-Type": "image/jpeg", "Content-Length": "abc"}, body)
    try:
        got = fetch(loopback.url("/p.jpg"), tmp_path, ALLOW)
    except Unreachable:  # the HTTP client may refuse the header itself: then it says so
        return
    assert got.size_bytes > 0


def test_a_page_embedding_a_file_url_is_not_a_medium(loopback, tmp_path):
    page = b'<html><head><title>x</title></head><body><video src="file:///etc/passwd"></video></body></html>'
    loopback.routes["/post"] = (200, {"Content-Type": "text/html"}, page)
    with pytest.raises(NotAMedium) as e:
        fetch(loopback.url("/post"), tmp_path, ALLOW)
    assert not e.value.transient
