"""Stage 1, fetch: a local file, a direct image/video URL, or a platform link (yt-dlp).

``fetch(source, dest_dir, settings)`` returns a :class:`Fetched` with the local path and
the sha256 of the bytes (so a repost under another URL is recognised downstream).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import mimetypes
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .errors import (
    DetectorError,
    NotAMedium,
    NotFound,
    PrivateAddress,
    TooLarge,
    TooLong,
    Unreachable,
    UnsupportedURL,
)
from .hashing import sha256_file
from .netguard import check_url, guard_connections
from .settings import DetectorSettings

log = logging.getLogger(__name__)

MEDIA_TYPES = ("image/", "video/")
BINARY_TYPES = ("application/octet-stream", "binary/octet-stream", "application/mp4")
MAX_REDIRECTS = 5
# Protocols yt-dlp's own downloaders fetch in-process (HTTP, native HLS and DASH); RTMP,
# RTSP, websockets and the like would hand the URL to an external program.
YTDLP_PROTOCOLS = "[protocol~='^(https?|m3u8(_native)?|http_dash_segments)$']"
CHUNK = 1 << 16


@dataclass(frozen=True)
class Fetched:
    path: Path
    input: str
    url: str | None
    via: str  # "file" | "http" | "yt-dlp"
    sha256: str
    size_bytes: int
    title: str | None = None

    def to_dict(self) -> dict:
        """JSON-safe: what a task hands the next task."""
        return {**dataclasses.asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, d: dict) -> Fetched:
        return cls(**{**d, "path": Path(d["path"])})


def is_url(source: str) -> bool:
    return "://" in source[:16]


def fetch(source: str, dest_dir: Path, settings: DetectorSettings | None = None) -> Fetched:
    settings = settings or DetectorSettings()
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise NotFound(f"There is no file at {source!r}.")
        size = path.stat().st_size
        if size > settings.max_bytes:
            raise TooLarge(_too_large(size, settings))
        return Fetched(path, source, None, "file", sha256_file(path), size, path.name)
    dest_dir.mkdir(parents=True, exist_ok=True)
    check_url(source, settings.allow_private_hosts)
    # Whatever the link leads to (redirects, a page's embedded media, a manifest's fragments),
    # every connection made from here on is vetted where the socket connects.
    with guard_connections(settings.allow_private_hosts) as guard:
        try:
            if _platform_extractor(source):
                got = _fetch_ytdlp(source, source, dest_dir, settings)
            else:
                got = _fetch_http(source, dest_dir, settings)
        except Exception as e:
            if guard.blocked and not isinstance(e, PrivateAddress):
                # yt-dlp reports a refused connection as a failed download: say what it was
                raise guard.refusal() from e
            raise
    if guard.blocked:  # a library went on after a refused connection: refuse the whole link
        got.path.unlink(missing_ok=True)
        raise guard.refusal()
    return got


def _too_large(size: int, settings: DetectorSettings) -> str:
    return (f"The file is {size / 2**20:.0f} MB; the limit is "
            f"{settings.max_bytes / 2**20:.0f} MB.")


def _platform_extractor(url: str) -> str | None:
    """The name of a yt-dlp extractor made for this site, if any (the generic one excluded)."""
    from yt_dlp.extractor import gen_extractor_classes

    for ie in gen_extractor_classes():
        if ie.ie_key() == "Generic":
            continue
        try:
            if ie.suitable(url):
                return ie.ie_key()
        except Exception:  # a broken extractor regex must not break fetching
            continue
    return None


def _fetch_http(url: str, dest_dir: Path, settings: DetectorSettings) -> Fetched:
    """A direct link: follow its redirects (each target vetted), judge the answer, stream the
    medium to disk; a web page goes to yt-dlp instead."""
    import requests

    session = requests.Session()  # fetch() guards every connection it makes (guard_connections)
    session.trust_env = False  # no proxies from the environment: the guard must see the real peer
    session.headers["User-Agent"] = "deepfake-check/0.1"
    resp, current = _follow_redirects(session, url, settings)
    with resp:
        ctype = _judge_answer(resp)
        if ctype in ("text/html", "application/xhtml+xml"):
            # A web page: yt-dlp's generic extractor finds embedded videos.
            return _fetch_ytdlp(url, current, dest_dir, settings)
        if not (ctype.startswith(MEDIA_TYPES) or ctype in BINARY_TYPES or not ctype):
            raise NotAMedium(f"The link serves {ctype!r}, not an image or a video.")
        length = _content_length(resp.headers.get("Content-Length"))
        if length > settings.max_bytes:
            raise TooLarge(_too_large(length, settings))
        path = dest_dir / f"media{_suffix(urlsplit(current).path, ctype)}"
        digest, size = _stream_to(resp, path, settings.max_bytes)
    if size == 0:
        path.unlink(missing_ok=True)
        raise NotAMedium("The link served an empty file.")
    return Fetched(path, url, current, "http", digest, size, os.path.basename(urlsplit(current).path) or None)


def _follow_redirects(session, url: str, settings: DetectorSettings):
    """The first answer that is not a redirect, and the address it came from."""
    import requests

    current = url  # vetted by fetch(); each redirect target is vetted below
    try:
        for _ in range(MAX_REDIRECTS + 1):
            resp = session.get(current, stream=True, allow_redirects=False,
                               timeout=(10, settings.fetch_timeout_s))
            if not resp.is_redirect:
                return resp, current
            location = resp.headers["Location"]
            resp.close()
            try:
                current = urljoin(current, location)
            except ValueError as e:  # e.g. a broken [IPv6] literal
                raise UnsupportedURL(f"The link redirects to an invalid address ({e}).") from e
            check_url(current, settings.allow_private_hosts)
        # a loop, not a passing failure: not retried
        raise NotFound(f"The link redirects more than {MAX_REDIRECTS} times (a redirect loop).")
    except ValueError as e:  # requests parses the Location itself: a broken [IPv6] literal, a bad port
        raise UnsupportedURL(f"The link redirects to an invalid address ({e}).") from e
    except (requests.ConnectionError, requests.Timeout) as e:  # may pass: retried
        raise Unreachable(f"The link could not be reached ({type(e).__name__}).") from e
    except requests.RequestException as e:  # a malformed answer or address: trying again will not help
        raise NotFound(f"The link could not be fetched ({type(e).__name__}).") from e


def _judge_answer(resp) -> str:
    """The answer's media type; an HTTP error as the failure it is (gone, not public, try later)."""
    code = resp.status_code
    if 300 <= code < 400:  # a redirect without a Location
        raise NotFound(f"The link answered HTTP {code} without saying where to.")
    if code in (404, 410):
        raise NotFound(f"The link returned HTTP {code}: the file is gone.")
    if code in (401, 403):
        raise NotFound(f"The link returned HTTP {code}: the file is not public.")
    if code >= 500 or code == 429:
        raise Unreachable(f"The server answered HTTP {code}; try again later.")
    if code >= 400:
        raise NotFound(f"The link returned HTTP {code}.")
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _stream_to(resp, path: Path, max_bytes: int) -> tuple[str, int]:
    """Write the body to ``path`` in chunks, stopping past ``max_bytes``: (sha256, size). A
    failed download leaves no file."""
    import requests

    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as f:
            for chunk in resp.iter_content(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"The file is larger than the {max_bytes / 2**20:.0f} MB limit.")
                h.update(chunk)
                f.write(chunk)
    except requests.RequestException as e:
        path.unlink(missing_ok=True)
        raise Unreachable("The download broke off; try again later.") from e
    except DetectorError:
        path.unlink(missing_ok=True)
        raise
    return h.hexdigest(), size


def _content_length(value: str | None) -> int:
    """The announced size, or 0 when it is missing or not a number (the stream is capped anyway)."""
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _suffix(path: str, ctype: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if 1 < len(ext) <= 5:
        return ext
    return mimetypes.guess_extension(ctype or "") or ".bin"


def _fetch_ytdlp(original: str, url: str, dest_dir: Path, settings: DetectorSettings) -> Fetched:
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import YoutubeDLError

    h = settings.max_height
    p = YTDLP_PROTOCOLS
    opts = {
        # Best mp4-compatible video at or under max_height with audio, else the best single file,
        # over protocols yt-dlp downloads itself (so through the connection guard).
        "format": (f"bv*[height<={h}][ext=mp4]{p}+ba[ext=m4a]{p}/b[height<={h}][ext=mp4]{p}/"
                   f"bv*[height<={h}]{p}+ba{p}/b[height<={h}]{p}/w{p}"),
        "external_downloader": "native",  # never ffmpeg/aria2c/curl: they open their own sockets
        "concurrent_fragment_downloads": 1,  # fragments in this thread, where the guard is
        "merge_output_format": "mp4",
        "outtmpl": str(dest_dir / "media.%(ext)s"),
        "noplaylist": True,
        "playlist_items": "1",
        "max_filesize": settings.max_bytes,
        "socket_timeout": settings.fetch_timeout_s,
        "retries": 2,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YtdlpLogger(),
        "cachedir": False,
    }
    try:
        with YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=False)
            if info.get("_type") == "playlist":
                entries = [e for e in (info.get("entries") or []) if e]
                if not entries:
                    raise NotAMedium("No video was found at this link.")
                info = entries[0]
            if info.get("is_live"):
                raise UnsupportedURL("Live streams cannot be checked; send the recording once it ends.")
            duration = info.get("duration")
            if duration and duration > settings.max_duration_s:
                raise TooLong(f"The video lasts {duration / 60:.0f} min; the limit is "
                              f"{settings.max_duration_s / 60:.0f} min.")
            size = info.get("filesize") or info.get("filesize_approx")
            if size and size > settings.max_bytes:
                raise TooLarge(_too_large(size, settings))
            info = ydl.process_ie_result(info, download=True)
    except YoutubeDLError as e:  # DownloadError, and networking errors it raises unwrapped
        raise _map_ytdlp_error(str(e)) from e
    files = [Path(r["filepath"]) for r in info.get("requested_downloads") or [] if r.get("filepath")]
    files = [p for p in files if p.is_file()] or sorted(dest_dir.glob("media.*"))
    if not files:
        raise TooLarge("The download was refused: the file exceeds the size limit.")
    path = files[0]
    size = path.stat().st_size
    return Fetched(path, original, info.get("webpage_url") or url, "yt-dlp",
                   sha256_file(path), size, info.get("title"))


def _map_ytdlp_error(msg: str) -> DetectorError:
    low = msg.lower()
    if "unsupported url" in low:
        return NotAMedium("No image or video was found at this link.")
    if "private" in low or "sign in" in low or "login" in low or "members-only" in low:
        return NotFound("The video is private or needs a login; only public videos can be checked.")
    if "404" in low or "not found" in low or "unavailable" in low or "removed" in low:
        return NotFound("The video is unavailable or was removed.")
    if "max-filesize" in low or "larger than" in low:
        return TooLarge("The video is larger than the size limit.")
    if any(w in low for w in TRANSIENT_WORDS):  # network trouble: worth another try
        return Unreachable("The video could not be downloaded; try again later.")
    if "unsupported" in low or "scheme" in low or "no suitable" in low:
        return NotAMedium("The page's video uses a kind of link that cannot be downloaded.")
    return NotAMedium("The video on this page could not be downloaded.")


# yt-dlp messages of failures that may pass (retried); the rest fail the check at once
TRANSIENT_WORDS = ("timed out", "timeout", "connection reset", "connection refused", "connection aborted",
                   "temporarily", "temporary failure", "http error 5", "http error 429", "too many requests",
                   "network is unreachable", "remote end closed", "incomplete read", "eof occurred")


class _YtdlpLogger:
    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


def cleanup(fetched: Fetched) -> None:
    """Delete downloaded media (never a user's local file)."""
    if fetched.via != "file":
        shutil.rmtree(fetched.path.parent, ignore_errors=True)
