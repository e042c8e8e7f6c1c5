"""The two tasks. They take a job id and paths, never media or frames.

Expected outcomes (dead link, private address, too long, corrupt file, no trained
weights) end the job with a typed problem; only transient network errors are
retried, with exponential backoff. "No face" is a finished job whose report says so.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from contextlib import contextmanager

import redis
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready

from detector.assemble import source_of
from detector.errors import AnalysisTimeout, DetectorError, DownloadTimeout, InternalError, WorkerCrashed
from detector.fetch import Fetched, fetch
from detector.settings import DetectorSettings
from detector.vocabulary import TERMINAL, Stage

from . import callbacks, keys
from .celery_app import ANALYZE_TASK, DELIVER_TASK, FETCH_TASK, app
from .jobstore import JobStore
from .settings import ServiceSettings

log = logging.getLogger(__name__)
SETTINGS = ServiceSettings()
MAX_DELIVERIES = 3  # a job whose worker dies this often (a poison medium) fails instead of looping

_store: JobStore | None = None
_analyzer = None


def store() -> JobStore:
    global _store
    if _store is None:
        _store = JobStore(SETTINGS)
    return _store


def analyzer():
    """The process's Analyzer, loaded once (after fork) and reused for every job."""
    global _analyzer
    if _analyzer is None:
        from detector.pipeline import Analyzer

        _analyzer = Analyzer().load()
    return _analyzer


@worker_process_init.connect
def _load_models_after_fork(**_):
    consumed = app.amqp.queues.consume_from  # None: every queue
    if not consumed or "analyze" in consumed:
        try:
            analyzer()
        except DetectorError as e:  # e.g. no trained weights: jobs will fail with this problem
            log.error("models not loaded: %s", e.detail)



def _start(job_id: str) -> dict | None:
    """The job record, or None when there is nothing (more) to do."""
    rec = store().get(job_id)
    if not rec or rec.get("state") in TERMINAL:
        return None
    deliveries = store().r.hincrby(keys.job(job_id), "deliveries", 1)
    if deliveries > MAX_DELIVERIES:
        store().fail(job_id, WorkerCrashed().to_dict())
        _cleanup(job_id)
        return None
    if deliveries > 1:  # the worker that had it stopped (killed, restarted, lost)
        store().event(job_id, _stage_of(rec),
                      f"A worker stopped during this check; starting it again "
                      f"(attempt {deliveries} of {MAX_DELIVERIES}).")
    return rec


def _stage_of(rec: dict) -> Stage:
    """The stage a job record was at (one this version does not name: queued)."""
    try:
        return Stage(rec.get("stage") or Stage.QUEUED)
    except ValueError:
        return Stage.QUEUED


@worker_ready.connect
def _start_housekeeping(**_):
    """In the worker's main process: fail checks whose task is gone, delete orphaned folders."""

    def loop():
        st = JobStore(SETTINGS)  # its own connection, in this thread
        while True:
            time.sleep(SETTINGS.housekeeping_every_s)
            try:
                st.housekeeping()
            except redis.RedisError as e:  # Redis away for a moment: the next round tries again
                log.warning("housekeeping skipped: %s", e)

    threading.Thread(target=loop, name="housekeeping", daemon=True).start()


@contextmanager
def heartbeat(job_id: str):
    """Signs of life for the stale sweep while a task works (a long download, a long batch)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(SETTINGS.heartbeat_s()):
            try:
                store().beat(job_id)
            except redis.RedisError as e:  # a missed beat is harmless; many in a row are what the sweep is for
                log.debug("heartbeat for %s missed: %s", job_id, e)

    t = threading.Thread(target=loop, name=f"heartbeat-{job_id[:8]}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()


def _cleanup(job_id: str) -> None:
    shutil.rmtree(SETTINGS.work_dir(job_id), ignore_errors=True)


@app.task(bind=True, name=FETCH_TASK, soft_time_limit=SETTINGS.fetch_soft_limit_s,
          time_limit=SETTINGS.fetch_hard_limit_s)
def fetch_job(self, job_id: str, upload_path: str | None = None) -> dict:
    rec = _start(job_id)
    if rec is None:
        return {"job": job_id, "outcome": "skipped"}
    st = store()
    st.event(job_id, Stage.DOWNLOADING, "Downloading the medium" if not upload_path else "Reading the upload")
    try:
        with heartbeat(job_id):
            fetched = fetch(upload_path or rec["input"], SETTINGS.work_dir(job_id) / "media")
    except DetectorError as e:
        if e.transient and self.request.retries < SETTINGS.max_retries:
            st.r.hincrby(keys.job(job_id), "deliveries", -1)
            delay = SETTINGS.retry_backoff_s * 2 ** self.request.retries
            st.event(job_id, Stage.DOWNLOADING, f"{e.detail} Trying again in {delay:.0f} s.")
            raise self.retry(countdown=delay, max_retries=SETTINGS.max_retries) from e
        st.fail(job_id, e.to_dict())
        _cleanup(job_id)
        return {"job": job_id, "outcome": str(e.code)}
    except SoftTimeLimitExceeded:
        st.fail(job_id, DownloadTimeout().to_dict())
        _cleanup(job_id)
        return {"job": job_id, "outcome": "timeout"}
    except Retry:
        raise
    except Exception:  # a bug, not the user's input: the job ends (never left queued) and is logged
        log.exception("job %s: fetch failed", job_id)
        st.fail(job_id, InternalError().to_dict())
        _cleanup(job_id)
        raise
    if upload_path:  # the report names the upload as the user did, not by its path on the server
        fetched = dataclasses.replace(fetched, input=rec["input"], title=rec["input"])
    st.set_fields(job_id, sha256=fetched.sha256, title=fetched.title, deliveries=0)
    keep = rec.get("retain") != "0"  # zero retention: no other check's result, no pointer to this one
    if rec.get("fresh") != "1" and keep:
        other = st.claim_content(job_id, fetched.sha256)
        if other:
            st.reuse(job_id, other, source_of(fetched))
            _cleanup(job_id)
            return {"job": job_id, "outcome": "content-cache-hit", "same_as": other}
    elif SETTINGS.keeps_results and keep:
        st.r.set(keys.sha_key(fetched.sha256), job_id, ex=SETTINGS.retention_s)
    st.event(job_id, Stage.QUEUED, "Waiting for an analysis worker")
    analyze_job.apply_async(args=[job_id, fetched.to_dict()])
    return {"job": job_id, "outcome": "fetched"}


@app.task(bind=True, name=ANALYZE_TASK, soft_time_limit=SETTINGS.analyze_soft_limit_s,
          time_limit=SETTINGS.analyze_hard_limit_s)
def analyze_job(self, job_id: str, fetched: dict) -> dict:
    rec = _start(job_id)
    if rec is None:
        return {"job": job_id, "outcome": "skipped"}
    st = store()
    try:
        with heartbeat(job_id):
            analysis = analyzer().analyze(Fetched.from_dict(fetched), progress=st.progress(job_id))
        st.finish(job_id, analysis.report, analysis.gallery_png, seen_before=0)
        rep = analysis.report
        log.info("check %s: %s%s, %d shot(s), %d face(s) (%s)", job_id, rep.verdict_label,
                 "" if rep.score is None or rep.verdict_note else f" ({rep.score * 100:.1f}%)",
                 len(rep.shots), len(rep.faces), rep.source.input)
        return {"job": job_id, "outcome": analysis.report.status}
    except DetectorError as e:
        st.fail(job_id, e.to_dict())
        return {"job": job_id, "outcome": str(e.code)}
    except SoftTimeLimitExceeded:
        st.fail(job_id, AnalysisTimeout().to_dict())
        return {"job": job_id, "outcome": "timeout"}
    except Exception:
        log.exception("job %s failed", job_id)
        st.fail(job_id, InternalError().to_dict())
        raise
    finally:
        _cleanup(job_id)


@app.task(bind=True, name=DELIVER_TASK, soft_time_limit=120, time_limit=150, max_retries=len(callbacks.BACKOFF_S))
def deliver_callbacks(self, job_id: str) -> dict:
    """POST the ended check's view to its callbacks (worker.callbacks); undelivered ones are
    tried again with backoff, each at most 1 + len(BACKOFF_S) times."""
    try:
        n = callbacks.deliver(store().r, SETTINGS, job_id, DetectorSettings().allow_private_hosts)
    except callbacks.Retryable:
        raise self.retry(countdown=callbacks.BACKOFF_S[min(self.request.retries, len(callbacks.BACKOFF_S) - 1)]) \
            from None
    if store().r.hget(keys.job(job_id), "retain") == "0":  # zero retention: the reply is out
        store().erase(job_id)
    return {"job": job_id, "delivered": n}
