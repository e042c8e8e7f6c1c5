"""The worker's side of the job record: progress events, results, failures, caches.

Every progress change is appended to the job's event stream (``XADD``) and mirrored in
the job hash, so an adapter can either follow the stream or poll the record; neither
needs a Celery result backend.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from detector.errors import WorkerLost
from detector.report import Report, Source
from detector.vocabulary import TERMINAL, Event, Problem, Stage, State, as_problem

from . import keys
from .settings import ServiceSettings

EVENTS_MAXLEN = 1000
OUTAGE_RETRIES = 20  # backoff 0.1 s doubling to 2 s: about 30 s of outage ridden out
log = logging.getLogger(__name__)


def now() -> float:
    return round(time.time(), 3)


class JobStore:
    def __init__(self, settings: ServiceSettings, client: redis.Redis | None = None):
        self.settings = settings
        self.r = client or redis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
            # A Redis restart or a short outage mid-job: each command is tried again for about
            # 30 s (OUTAGE_RETRIES), so the task carries on and ends its job instead of dying half-written.
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), OUTAGE_RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])

    # -- reading ------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, str]:
        return self.r.hgetall(keys.job(job_id))

    # -- writing ------------------------------------------------------------------------
    def event(self, job_id: str, stage: Stage, message: str, state: State = State.RUNNING,
              done: int | None = None, total: int | None = None, counts: dict | None = None,
              score: float | None = None, verdict: str | None = None, code: Problem | None = None) -> None:
        """Append one event to the job's stream and mirror it in the job record."""
        if self.ended(job_id):  # an ended check stays ended (a late task after a stale sweep)
            return
        ev = Event(Stage(stage), message, state=State(state), ts=now(), done=done, total=total, counts=counts or {},
                   score=score, verdict=verdict, code=code)
        ttl = (self.settings.done_ttl(self.r.hget(keys.job(job_id), "retain") != "0") if ev.terminal
               else self.settings.live_ttl())
        fields = ev.to_fields()
        p = self.r.pipeline()
        p.xadd(keys.events(job_id), fields, maxlen=EVENTS_MAXLEN, approximate=True)
        p.expire(keys.events(job_id), ttl)
        record = {"state": fields["state"], "stage": fields["stage"], "message": message, "updated_at": fields["ts"]}
        for f in ("done", "total", "counts"):
            record[f] = fields.get(f, "")
        p.hset(keys.job(job_id), mapping=record)
        p.expire(keys.job(job_id), ttl)
        if ev.terminal:
            p.expire(keys.readers(job_id), ttl)
            p.zrem(keys.LIVE, job_id)
            if not self.settings.keeps_results:  # the URL's pointer served in-flight sharing only
                url = self.r.hget(keys.job(job_id), "normalised_url")
                if url:
                    p.eval(keys.DELETE_IF_EQUAL, 1, keys.url_key(url), job_id)
        elif ev.state is State.RUNNING:
            p.zadd(keys.LIVE, {job_id: ev.ts})
        p.execute()

    def beat(self, job_id: str) -> None:
        """A running task's sign of life between progress events (see ``sweep_stale``)."""
        self.r.zadd(keys.LIVE, {job_id: now()}, xx=True)

    def ended(self, job_id: str) -> bool:
        return self.r.hget(keys.job(job_id), "state") in TERMINAL

    def progress(self, job_id: str):
        """A detector ProgressFn that publishes the pipeline's events for this job."""

        def publish(ev: Event) -> None:
            if ev.terminal:  # the terminal event is written with the result
                return
            self.event(job_id, ev.stage, ev.message, done=ev.done, total=ev.total, counts=ev.counts)

        return publish

    def set_fields(self, job_id: str, **fields) -> None:
        self.r.hset(keys.job(job_id), mapping={k: "" if v is None else str(v) for k, v in fields.items()})

    def finish(self, job_id: str, report: Report, gallery: bytes | None, **fields) -> None:
        """The check's result, stored once: the Report's JSON in the job's hash (what the API
        serves), the gallery PNG as a file beside it."""
        if self.ended(job_id):  # e.g. swept as stale while this process was frozen: the user was told
            log.warning("job %s already ended; its late result is dropped", job_id)
            return
        if gallery is not None:
            out = self.settings.results_dir(job_id)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gallery.png").write_bytes(gallery)
        self.set_fields(job_id, report=report.to_json(), has_gallery=int(gallery is not None),
                        finished_at=now(), **fields)
        self.event(job_id, Stage.DONE, report.verdict_label, State.DONE,
                   score=report.score, verdict=report.verdict.value)
        self.r.hincrby(keys.STATS, "jobs_done", 1)
        self.callbacks_due(job_id)

    def fail(self, job_id: str, problem: dict) -> None:
        if self.ended(job_id):
            log.warning("job %s already ended; a late failure (%s) is dropped", job_id, problem.get("code"))
            return
        self.set_fields(job_id, problem=json.dumps(problem), finished_at=now())
        self.event(job_id, Stage.FAILED, problem.get("detail") or problem.get("title", "failed"), State.FAILED,
                   code=as_problem(problem.get("code")))
        self.r.hincrby(keys.STATS, "jobs_failed", 1)
        self.r.hincrby(keys.STATS, f"jobs_failed:{problem.get('code', 'error')}", 1)
        self.callbacks_due(job_id)

    def erase(self, job_id: str) -> None:
        """Delete a check (zero retention, once its reply is delivered): its keys, the pointers
        to it, its report, gallery and folders (extension_api.store.ApiStore.erase likewise)."""
        rec = self.get(job_id)
        self.r.delete(*keys.of_job(job_id))
        self.r.zrem(keys.LIVE, job_id)
        for pointer in ((keys.url_key(rec["normalised_url"]) if rec.get("normalised_url") else None),
                        (keys.sha_key(rec["sha256"]) if rec.get("sha256") else None)):
            if pointer:
                self.r.eval(keys.DELETE_IF_EQUAL, 1, pointer, job_id)
        for d in (self.settings.results_dir(job_id), self.settings.work_dir(job_id)):
            shutil.rmtree(d, ignore_errors=True)
        self.r.hincrby(keys.STATS, "checks_erased", 1)

    def callbacks_due(self, job_id: str) -> None:
        """The check ended: queue the delivery of its callbacks, if it has any (worker.callbacks)."""
        if self.r.exists(keys.callbacks(job_id)):
            from .celery_app import DELIVER_TASK, app

            app.send_task(DELIVER_TASK, args=[job_id])

    def claim_content(self, job_id: str, sha256: str) -> str | None:
        """Record that this job analyses content ``sha256``; return an earlier job's id
        whose result can be reused, or None."""
        if not self.settings.keeps_results:  # nothing is kept, so nothing is reused
            return None
        key = keys.sha_key(sha256)
        if self.r.set(key, job_id, nx=True, ex=self.settings.retention_s):
            return None
        other = self.r.get(key)
        if other and other != job_id and self.r.hget(keys.job(other), "state") == State.DONE:
            return other
        self.r.set(key, job_id, ex=self.settings.retention_s)  # earlier one failed or expired
        return None

    def reuse(self, job_id: str, other: str, source: Source) -> None:
        """Finish ``job_id`` with the analysis of ``other`` (same content, another link or
        upload). The report names this job's own source: another asker's link or file name
        is not shown, and ``other``'s id (which opens its report page) is kept only when
        both checks have the same owner."""
        rec = self.get(other)
        src = self.settings.results_dir(other) / "gallery.png"
        gallery = src.read_bytes() if src.is_file() else None
        self.r.hincrby(keys.STATS, "content_cache_hits", 1)
        report = Report.from_json(rec["report"]).model_copy(update={"source": source})
        same_owner = rec.get("owner") is not None and rec.get("owner") == self.r.hget(keys.job(job_id), "owner")
        self.finish(job_id, report, gallery, seen_before=1, **({"same_content_as": other} if same_owner else {}))

    # -- housekeeping (each worker's main process, every housekeeping_every_s) --------------
    def sweep_stale(self) -> list[str]:
        """Fail the checks whose task is gone: queued or running, with no progress and no
        heartbeat for the stale limit (longer than a redelivery takes, so a lost worker's job
        is retried first), and no message waiting for them in the broker (a check queued
        behind a long backlog is waiting, not lost)."""
        limit = now() - self.settings.stale_limit_s()
        stale = self.r.zrangebyscore(keys.LIVE, "-inf", limit)
        if not stale:
            return []
        waiting = self._broker_messages()
        swept = []
        for job_id in stale:
            if job_id in waiting:
                self.r.zadd(keys.LIVE, {job_id: now()}, xx=True)
                continue
            if not self.r.set(f"df:sweep:{job_id}", "1", nx=True, ex=60):
                continue  # another worker's sweep has it
            if self.r.hget(keys.job(job_id), "state") not in (None, *TERMINAL):
                log.warning("job %s: no sign of life for %d s and no message in the broker; failing it",
                            job_id, self.settings.stale_limit_s())
                self.fail(job_id, WorkerLost().to_dict())
                swept.append(job_id)
            self.r.zrem(keys.LIVE, job_id)
        return swept

    def _broker_messages(self) -> str:
        """Every message waiting in the task queues or delivered and not yet acknowledged,
        as one text (each names its job id in its headers' ``argsrepr``)."""
        from .celery_app import QUEUES

        parts = [m for q in QUEUES for m in self.r.lrange(q, 0, -1)]
        parts += self.r.hvals("unacked")  # kombu's Redis transport: delivered, not acked
        return "\n".join(parts)

    def clean_orphans(self) -> int:
        """Delete the folders (downloads, uploads, reports, galleries) of checks whose record
        is gone: expired after the retention, or never queued. Records exist before folders."""
        gone = 0
        for sub in ("results", "jobs"):
            root = self.settings.data_dir / sub
            if not root.is_dir():
                continue
            for d in root.iterdir():
                if d.is_dir() and not self.r.exists(keys.job(d.name)):
                    shutil.rmtree(d, ignore_errors=True)
                    gone += 1
        return gone

    def housekeeping(self) -> None:
        self.sweep_stale()
        self.clean_orphans()

