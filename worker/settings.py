"""Typed settings of the service (workers, API, local stack), from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector.settings import CommaList, DetectorSettings


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEEPFAKE_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           validation_alias=AliasChoices("REDIS_URL", "DEEPFAKE_REDIS_URL"))
    data_dir: Path = Field(default_factory=lambda: DetectorSettings().cache_dir / "data")  # DEEPFAKE_CACHE_DIR
    # Job records, reports and galleries are kept this long after a check ends. 0 keeps nothing:
    # no cache, and a finished check stays only ``delivery_grace_s`` for its reply to be fetched.
    retention_s: int = Field(7 * 24 * 3600, ge=0)
    delivery_grace_s: int = Field(600, gt=0)
    # A running check with no sign of life (progress or heartbeat) for this long is failed with
    # a sentence. Default: the visibility timeout + 60 s, so a redelivery always comes first.
    stale_after_s: int | None = Field(None, gt=0)
    housekeeping_every_s: float = Field(30.0, gt=0)  # stale sweep and folder clean-up, in each worker
    # Celery task limits (seconds)
    fetch_soft_limit_s: int = 300
    fetch_hard_limit_s: int = 330
    analyze_soft_limit_s: int = 900
    analyze_hard_limit_s: int = 960
    max_retries: int = 3
    retry_backoff_s: float = 5.0
    # API
    public_url: str = "http://127.0.0.1:8080"  # where report pages are reachable (links in bots)
    rate_limit_per_min: int = 20  # submissions per token per minute
    read_rate_limit_per_min: int = 600  # status/events reads per token per minute
    # Origins allowed by CORS: browser-extension origins only. Empty = any extension.
    cors_origins: CommaList = Field(default_factory=list)
    max_upload_bytes: int = 200 * 1024 * 1024
    # Redis connections of one API process: requests share a pool (a request waits up to 5 s
    # for a free connection rather than failing); each open event stream holds one connection
    # of a pool of its own while it waits for events, at most this many streams at once.
    redis_pool_size: int = Field(100, gt=0)
    max_event_streams: int = Field(256, gt=0)
    header_timeout_s: float = Field(10.0, gt=0)  # a connection must send a complete request head within this
    metrics_token: str = ""  # bearer token for /metrics; empty: /metrics answers loopback only

    @property
    def keeps_results(self) -> bool:
        return self.retention_s > 0

    def in_flight_s(self) -> int:
        """The longest a check can take, retries and redeliveries included."""
        return (self.fetch_hard_limit_s + self.analyze_hard_limit_s + 60) * (self.max_retries + 1)

    def live_ttl(self) -> int:
        """Lifetime of a check's keys while it is queued or running."""
        return max(self.retention_s, self.in_flight_s())

    def done_ttl(self, retain: bool = True) -> int:
        """Lifetime of a finished check's keys (a check asked not to be kept: the grace only)."""
        return (self.retention_s if retain else 0) or self.delivery_grace_s

    def stale_limit_s(self) -> int:
        from .celery_app import visibility_timeout_s

        return self.stale_after_s or visibility_timeout_s(self) + 60

    def heartbeat_s(self) -> float:
        return max(0.5, min(15.0, self.stale_limit_s() / 4))

    def stack_file(self) -> Path:
        """Written by a running ``deepfake-serve``: where its (private) Redis listens."""
        return self.data_dir / "stack.json"

    def tool_redis_url(self) -> str:
        """The Redis a command-line tool should use: REDIS_URL when set, else the running
        ``deepfake-serve``'s (its private Redis is not on the default port), else the default."""
        import json
        import os

        if os.environ.get("REDIS_URL") or os.environ.get("DEEPFAKE_REDIS_URL"):
            return self.redis_url
        try:
            stack = json.loads(self.stack_file().read_text())
            os.kill(int(stack["pid"]), 0)  # the stack that wrote it is still running
            return str(stack["redis_url"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.redis_url

    def results_dir(self, job_id: str) -> Path:
        return self.data_dir / "results" / job_id

    def work_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id
