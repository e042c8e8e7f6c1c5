"""Redis key names, shared by the workers and the API (the job vocabulary: detector.vocabulary).

  df:job:{id}        hash: the job record (written by worker.jobstore and extension_api.store)
  df:events:{id}     stream: the job's progress events, in order (replayable)
  df:readers:{id}    set: names of the tokens that may read the job through /v1/checks
  df:url:{digest}    string: job id for a normalised URL (cache + sharing)
  df:sha:{sha256}    string: job id for downloaded content (reposts elsewhere)
  df:tokens          hash: sha256(token) -> name;  df:token:{name} -> sha256(token)
  df:rl:{name}:{kind}:{minute}   counter for rate limits
  df:stats           hash: counters for /metrics
  df:callbacks:{id} hash: delivery id -> {"url", "owner", "attempts"}: callbacks still to deliver
  df:feedback:{id}  hash: person's pseudonym -> {"opinion", "client", "at"} (worker.feedback)
  df:live            sorted set: queued or running job id -> time of its last sign of life (progress, heartbeat)
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def job(job_id: str) -> str:
    return f"df:job:{job_id}"


def events(job_id: str) -> str:
    return f"df:events:{job_id}"


def readers(job_id: str) -> str:
    return f"df:readers:{job_id}"


def callbacks(job_id: str) -> str:
    return f"df:callbacks:{job_id}"


def feedback(job_id: str) -> str:
    return f"df:feedback:{job_id}"


FEEDBACK_PATTERN = "df:feedback:*"


def of_job(job_id: str) -> list[str]:
    """Every key that belongs to one check alone (erasing a check deletes these)."""
    return [job(job_id), events(job_id), readers(job_id), callbacks(job_id), feedback(job_id)]


def url_key(normalised: str) -> str:
    return "df:url:" + hashlib.sha256(normalised.encode()).hexdigest()[:40]


def sha_key(sha256: str) -> str:
    return f"df:sha:{sha256}"


# Lua: delete KEYS[1] only if it still holds ARGV[1] (a URL pointer another job may have replaced)
DELETE_IF_EQUAL = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

TOKENS = "df:tokens"
LIVE = "df:live"
STATS = "df:stats"


def token_name_key(name: str) -> str:
    return f"df:token:{name}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_TRACKING = re.compile(r"^(utm_.*|fbclid|gclid|igshid|si|feature|ref|ref_src|s|t)$")


def normalise_url(url: str) -> str:
    """A canonical form of a link, so the same medium shared twice hits the cache.

    Lower-cases scheme and host, drops ``www.``/``m.``, default ports, fragments and
    tracking parameters, sorts the query, and maps youtu.be/shorts links to watch?v=.
    """
    p = urlsplit(url.strip())
    scheme = p.scheme.lower()
    host = (p.hostname or "").lower()
    for prefix in ("www.", "m.", "mobile."):
        if host.startswith(prefix):
            host = host[len(prefix):]
    port = p.port
    netloc = host if port in (None, 80 if scheme == "http" else 443) else f"{host}:{port}"
    path = p.path or "/"
    query = [(k, v) for k, v in parse_qsl(p.query, keep_blank_values=True) if not _TRACKING.match(k)]
    if host == "youtu.be" and len(path) > 1:
        host, netloc, query = "youtube.com", "youtube.com", [("v", path[1:])] + query
        path = "/watch"
    elif host == "youtube.com" and path.startswith("/shorts/"):
        query = [("v", path.split("/")[2])] + query
        path = "/watch"
    if scheme == "http":  # the same resource over http and https
        scheme = "https"
    if path != "/" and path.endswith("/"):
        path = path.rstrip("/")
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))
