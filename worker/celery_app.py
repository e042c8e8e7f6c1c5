"""The Celery application: Redis broker, JSON only, late acks, two queues.

``fetch`` (downloads, I/O bound) and ``analyze`` (the pipeline) are separate queues so
a GPU host can consume only ``analyze``:

    celery -A worker.celery_app worker -Q analyze -c 1     # GPU host
    celery -A worker.celery_app worker -Q fetch -c 8 -P threads
"""

from __future__ import annotations

from celery import Celery

from .settings import ServiceSettings

FETCH_TASK = "worker.tasks.fetch_job"
ANALYZE_TASK = "worker.tasks.analyze_job"
DELIVER_TASK = "worker.tasks.deliver_callbacks"  # network I/O: on the fetch queue
QUEUES = ("fetch", "analyze")


VISIBILITY_MARGIN_S = 30
RESTORE_SWEEP_S = 5


def visibility_timeout_s(s: ServiceSettings) -> int:
    return max(s.analyze_hard_limit_s, s.fetch_hard_limit_s) + VISIBILITY_MARGIN_S


def transport_options(s: ServiceSettings) -> dict:
    return {"visibility_timeout": visibility_timeout_s(s),
            "unacked_restore_interval": RESTORE_SWEEP_S, "unacked_restore_throttle": 1}


def make_celery(settings: ServiceSettings | None = None) -> Celery:
    s = settings or ServiceSettings()
    app = Celery("deepfake", broker=s.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,  # job state lives in the job record, not in a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Each pool process loads the models after fork (worker_process_init) before it reports
        # "up"; Celery's default 4 s wait kills it when a busy host or a GPU makes that slower.
        worker_proc_alive_timeout=180,
        task_routes={FETCH_TASK: {"queue": "fetch"}, ANALYZE_TASK: {"queue": "analyze"},
                     DELIVER_TASK: {"queue": "fetch"}},
        task_default_queue="fetch",
        # A late-acked message whose worker vanished (the whole worker killed, the host lost) is
        # delivered again once it has been unacked this long: a little over the longest a task
        # may run (its hard limit), swept every few seconds.
        broker_transport_options=transport_options(s),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = make_celery()
