"""The API's side of the job record (async Redis): create or share jobs, read them,
tokens and rate limits. Key names and URL normalisation are in :mod:`worker.keys`."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import time
import uuid

import redis.asyncio as aioredis

from detector.vocabulary import Event, Problem, Stage, State
from worker import feedback, keys
from worker.settings import ServiceSettings

from .problems import ApiProblem


class ApiStore:
    def __init__(self, settings: ServiceSettings, r: aioredis.Redis):
        self.s = settings
        self.r = r

    async def token_name(self, token: str) -> str | None:
        return await self.r.hget(keys.TOKENS, keys.hash_token(token))

    async def rate_limit(self, name: str, kind: str, limit: int, window_s: float = 60.0) -> None:
        """At most ``limit`` requests of this kind in any ``window_s`` (a sliding log: no
        burst of twice the limit across a minute's boundary)."""
        key = f"df:rl:{name}:{kind}"
        now = time.time()
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        p = self.r.pipeline()
        p.zremrangebyscore(key, 0, now - window_s)
        p.zadd(key, {member: now})
        p.zcard(key)
        p.zrange(key, 0, 0, withscores=True)
        p.expire(key, int(window_s) + 1)
        _, _, count, oldest, _ = await p.execute()
        if count > limit:
            await self.r.zrem(key, member)  # a refused request does not use the allowance
            retry = max(1, int(oldest[0][1] + window_s - now) + 1) if oldest else int(window_s)
            raise ApiProblem(429, Problem.RATE_LIMITED, "Too many requests",
                             f"This token may make {limit} {kind} requests a minute; try again in {retry} s.",
                             headers={"Retry-After": str(retry)})

    async def check_auth_failures(self, client: str, limit: int) -> None:
        """429 for a client address that sent ``limit`` wrong or missing tokens this minute."""
        failures = await self.r.get(f"df:authfail:{client}:{int(time.time() // 60)}")
        if failures and int(failures) >= limit:
            retry = 60 - int(time.time() % 60)
            raise ApiProblem(429, Problem.RATE_LIMITED, "Too many failed logins",
                             f"This address sent {limit} requests without a valid token this minute; "
                             f"try again in {retry} s.", headers={"Retry-After": str(retry)})

    async def auth_failed(self, client: str) -> None:
        key = f"df:authfail:{client}:{int(time.time() // 60)}"
        p = self.r.pipeline()
        p.incr(key)
        p.expire(key, 120)
        await p.execute()

    async def get(self, job_id: str) -> dict[str, str]:
        if not job_id or len(job_id) > 64:
            return {}
        return await self.r.hgetall(keys.job(job_id))

    async def create(self, *, input: str, owner: str, fresh: bool, normalised: str | None = None,
                     upload: bool = False, retain: bool = True) -> tuple[str, str]:
        """A new job, or the one already answering this URL; the token that asked may read it.
        ``retain=False``: zero retention, so neither a cached result nor another request's
        check is used, and nothing points at this one (it is deleted once its reply is out)."""
        job_id, how = await self._create(input=input, owner=owner, fresh=fresh,
                                         normalised=normalised if retain else None, upload=upload, retain=retain)
        p = self.r.pipeline()
        p.sadd(keys.readers(job_id), owner)
        p.expire(keys.readers(job_id), self.s.live_ttl() if how != "cached" else self.s.done_ttl())
        await p.execute()
        return job_id, how

    async def can_read(self, rec: dict[str, str], name: str) -> bool:
        """Checks are read through /v1 by the tokens that asked for them (the owner, and
        whoever got the same job as a cache hit or a shared request)."""
        return rec.get("owner") == name or bool(await self.r.sismember(keys.readers(rec["id"]), name))

    async def _create(self, *, input: str, owner: str, fresh: bool, normalised: str | None = None,
                      upload: bool = False, retain: bool = True) -> tuple[str, str]:
        """A new job, or the one already answering this URL. Returns (job id, how):
        how is 'new', 'cached' (done before), or 'shared' (in progress for someone else).

        Only a finished report is a cache hit: a link whose last check failed (the site
        was down, the file was missing) is checked again."""
        ttl = self.s.live_ttl()
        url_key = keys.url_key(normalised) if normalised else None
        stale = None  # the URL's earlier job, failed or expired: replaced by the new one
        if url_key and not fresh:
            existing = await self.r.get(url_key)
            if existing:
                state = await self.r.hget(keys.job(existing), "state")
                if state == State.DONE and self.s.keeps_results:  # retention 0: never reused
                    await self.r.hincrby(keys.STATS, "url_cache_hits", 1)
                    return existing, "cached"
                if state in (State.QUEUED, State.RUNNING):
                    return existing, "shared"
                stale = existing
        job_id = uuid.uuid4().hex
        queued = Event(Stage.QUEUED, "Waiting in the queue", state=State.QUEUED, ts=round(time.time(), 3))
        now = str(queued.ts)
        record = {"id": job_id, "state": str(queued.state), "stage": str(queued.stage), "message": queued.message,
                  "input": input, "normalised_url": normalised or "", "owner": owner, "fresh": int(fresh),
                  "upload": int(upload), "retain": int(retain), "created_at": now, "updated_at": now}
        # The record exists before the URL points at it, so a concurrent identical request
        # that finds the URL's job always sees it queued (and shares it).
        p = self.r.pipeline()
        p.hset(keys.job(job_id), mapping=record)
        p.expire(keys.job(job_id), ttl)
        p.xadd(keys.events(job_id), queued.to_fields())
        p.expire(keys.events(job_id), ttl)
        p.zadd(keys.LIVE, {job_id: float(now)})  # the stale sweep watches it from now on
        await p.execute()
        if url_key:
            if fresh:
                await self.r.set(url_key, job_id, ex=ttl)
            elif not await self._claim_url(url_key, stale, job_id, ttl):
                winner = await self.r.get(url_key)  # a concurrent identical request won
                await self.r.delete(keys.job(job_id), keys.events(job_id))
                await self.r.zrem(keys.LIVE, job_id)
                if winner:
                    return winner, "shared"
                return await self._create(input=input, owner=owner, fresh=fresh, normalised=normalised,
                                          upload=upload, retain=retain)
        await self.r.hincrby(keys.STATS, "jobs_submitted", 1)
        return job_id, "new"

    # SET the key to ARGV[2] if it holds ARGV[1] ("" = absent): compare-and-set in one step.
    _CLAIM = """
    local cur = redis.call('GET', KEYS[1])
    if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
        redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
        return 1
    end
    return 0
    """

    async def _claim_url(self, url_key: str, expected: str | None, job_id: str, ttl: int) -> bool:
        return bool(await self.r.eval(self._CLAIM, 1, url_key, expected or "", job_id, ttl))

    # -- idempotent submissions ------------------------------------------------------------
    IDEM_PENDING = "-"
    IDEM_WAIT_S = 10.0

    def _idem_key(self, owner: str, key: str) -> str:
        return f"df:idem:{owner}:" + hashlib.sha256(key.encode()).hexdigest()[:40]

    async def claim_idempotency(self, owner: str, key: str) -> str | None:
        """None: this request creates the check (the key is now held). Else the id of the
        check an earlier request with this key created (waiting for it while it is created)."""
        k = self._idem_key(owner, key)
        if await self.r.set(k, self.IDEM_PENDING, nx=True, ex=60):
            return None
        deadline = time.monotonic() + self.IDEM_WAIT_S
        while True:
            got = await self.r.get(k)
            if got is None:  # the first attempt failed and let go: this one creates
                if await self.r.set(k, self.IDEM_PENDING, nx=True, ex=60):
                    return None
            elif got != self.IDEM_PENDING:
                return got
            if time.monotonic() > deadline:
                raise ApiProblem(409, Problem.SUBMISSION_IN_PROGRESS, "This submission is still being made",
                                 "A request with the same Idempotency-Key has not finished; try again shortly.",
                                 headers={"Retry-After": "2"})
            await asyncio.sleep(0.1)

    async def remember_idempotency(self, owner: str, key: str, job_id: str) -> None:
        await self.r.set(self._idem_key(owner, key), job_id, ex=self.s.live_ttl())

    async def release_idempotency(self, owner: str, key: str) -> None:
        await self.r.delete(self._idem_key(owner, key))

    async def forget(self, job_id: str, normalised: str | None = None) -> None:
        """Remove a job that was never queued (and the URL's pointer to it)."""
        await self.r.delete(keys.job(job_id), keys.events(job_id), keys.readers(job_id))
        await self.r.zrem(keys.LIVE, job_id)
        if normalised:  # only if it still points here (another request may have replaced it)
            await self.r.eval(keys.DELETE_IF_EQUAL, 1, keys.url_key(normalised), job_id)

    async def erase(self, rec: dict[str, str]) -> None:
        """Delete an ended check: its keys, the link's and the content's pointers to it, its
        report and gallery (worker.jobstore.JobStore.erase does the same in the workers)."""
        jid = rec["id"]
        await self.r.delete(*keys.of_job(jid))
        await self.r.zrem(keys.LIVE, jid)
        if rec.get("normalised_url"):
            await self.r.eval(keys.DELETE_IF_EQUAL, 1, keys.url_key(rec["normalised_url"]), jid)
        if rec.get("sha256"):
            await self.r.eval(keys.DELETE_IF_EQUAL, 1, keys.sha_key(rec["sha256"]), jid)
        folders = (self.s.results_dir(jid), self.s.work_dir(jid))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: [shutil.rmtree(d, ignore_errors=True) for d in folders])

    # -- feedback (worker.feedback) ----------------------------------------------------------

    async def set_feedback(self, job_id: str, who: str, opinion: feedback.Opinion, client: str) -> tuple[str | None, dict]:
        """One person's opinion of a check (replacing theirs, if any): what they said before,
        and the check's tally now. It lives as long as the check's record."""
        key = keys.feedback(job_id)
        p = self.r.pipeline()
        p.hget(key, who)
        p.hset(key, who, feedback.entry(opinion, client))
        p.pttl(keys.job(job_id))
        p.hvals(key)
        before, _, ttl, values = await p.execute()
        if ttl and ttl > 0:
            await self.r.pexpire(key, ttl)
        old = feedback.parse(before) if before else None
        return (old["opinion"] if old else None), feedback.tally(values)

    async def get_feedback(self, job_id: str, who: str) -> tuple[str | None, dict]:
        p = self.r.pipeline()
        p.hget(keys.feedback(job_id), who)
        p.hvals(keys.feedback(job_id))
        mine, values = await p.execute()
        v = feedback.parse(mine) if mine else None
        return (v["opinion"] if v else None), feedback.tally(values)

    async def feedback_summary(self) -> feedback.Summary:
        """Every check's feedback, counted (the model card's disputed verdicts, /metrics)."""
        total = feedback.Summary()
        async for k in self.r.scan_iter(match=keys.FEEDBACK_PATTERN, count=500):
            total.add(feedback.tally(await self.r.hvals(k)))
        return total

    async def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in (await self.r.hgetall(keys.STATS)).items()}


def new_token() -> str:
    return "dfk_" + secrets.token_urlsafe(24)
