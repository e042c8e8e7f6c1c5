"""What the people who asked said about a verdict: "this looks right" or "this looks wrong".

Stored with the check, in ``df:feedback:{id}`` (a hash): one field per person, so a person
has at most one opinion per check and a new one replaces it. A person is named only by a
pseudonym: sha256 of the client (the API token's name) and the id the client gives them
(a Telegram user id, a Slack team and user), never the id itself. The hash expires with the
check's record and is erased with it (:func:`worker.keys.of_job`).

The API writes and reads it (extension_api.store); ``deepfake-feedback export`` writes a CSV
of every check with feedback, beside its scores and model versions, for the people who
evaluate the detectors; the model card and /metrics count it (:class:`Summary`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Opinion(StrEnum):
    RIGHT = "right"  # "this looks right"
    WRONG = "wrong"  # "this looks wrong": the verdict is disputed


MAX_USER_CHARS = 200


def pseudonym(client: str, user: str | None) -> str:
    """Who gave feedback, without saying who: the same person through the same client gets
    the same pseudonym, and nobody can read an id back from it."""
    return hashlib.sha256(f"{client}\x00{user or ''}".encode()).hexdigest()[:24]


def entry(opinion: Opinion, client: str, now: float | None = None) -> str:
    """The stored value of one person's feedback."""
    return json.dumps({"opinion": opinion.value, "client": client, "at": round(now or time.time(), 3)})


def parse(raw: str) -> dict | None:
    try:
        v = json.loads(raw)
        Opinion(v["opinion"])
        return v
    except (ValueError, KeyError, TypeError):
        return None


def tally(values: Iterable[str]) -> dict[str, int]:
    """How many people said right and wrong about one check."""
    out = {o.value: 0 for o in Opinion}
    for raw in values:
        if (v := parse(raw)) is not None:
            out[v["opinion"]] += 1
    return out


@dataclass
class Summary:
    """Feedback over every check that has any (the model card's and /metrics' numbers)."""

    checks: int = 0  # checks with at least one opinion
    disputed: int = 0  # checks at least one person said look wrong
    right: int = 0  # opinions
    wrong: int = 0

    def add(self, counts: dict[str, int]) -> None:
        if counts["right"] + counts["wrong"] == 0:
            return
        self.checks += 1
        self.disputed += counts["wrong"] > 0
        self.right += counts["right"]
        self.wrong += counts["wrong"]

    def as_dict(self) -> dict:
        return {"checks_with_feedback": self.checks, "disputed": self.disputed,
                "opinions": {"right": self.right, "wrong": self.wrong}}


CSV_FIELDS = ["check_id", "analysed_at", "source", "sha256", "media", "score", "verdict", "inconclusive_reasons",
              "people", "models", "report_version", "person", "client", "opinion", "opinion_at"]


def csv_rows(job_id: str, record: dict[str, str], feedback: dict[str, str]) -> list[dict]:
    """One row per person's opinion of a check, beside the check's scores and model versions."""
    try:
        report = json.loads(record.get("report") or "null") or {}
    except ValueError:
        report = {}
    base = {
        "check_id": job_id,
        "analysed_at": report.get("created_at", ""),
        "source": (report.get("source") or {}).get("url") or record.get("input", ""),
        "sha256": (report.get("source") or {}).get("sha256", ""),
        "media": (report.get("media") or {}).get("kind", ""),
        "score": "" if report.get("score") is None else report["score"],
        "verdict": report.get("verdict", ""),
        "inconclusive_reasons": ";".join(w["code"] for w in report.get("inconclusive_reasons") or []),
        "people": ";".join(f"{p['label']}={p['score']}" for p in report.get("people") or []),
        "models": ";".join(f"{m['name']} {m['version']} {m['weights_sha256'][:12]}" for m in report.get("models") or []),
        "report_version": report.get("report_version", ""),
    }
    rows = []
    for who, raw in sorted(feedback.items()):
        if (v := parse(raw)) is None:
            continue
        rows.append(base | {"person": who, "client": v["client"], "opinion": v["opinion"],
                            "opinion_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v["at"]))})
    return rows


def write_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow(row)
    return buf.getvalue()


# -- reading it all back (a command-line tool's sync Redis) ---------------------------------

def scan(r) -> Iterable[tuple[str, dict[str, str], dict[str, str]]]:
    """(check id, its record, its feedback) of every check with feedback, in id order."""
    from . import keys

    ids = sorted(k.split(":", 2)[2] for k in r.scan_iter(match=keys.FEEDBACK_PATTERN, count=500))
    for jid in ids:
        fb = r.hgetall(keys.feedback(jid))
        if fb:
            yield jid, r.hgetall(keys.job(jid)), fb


def main(argv: list[str] | None = None) -> int:
    """``deepfake-feedback export [--out FILE]``: every opinion users gave, as CSV."""
    import argparse
    import sys
    from pathlib import Path

    import redis

    from .settings import ServiceSettings

    p = argparse.ArgumentParser(prog="deepfake-feedback",
                                description="What users said about the verdicts (this looks right / wrong).")
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write every opinion as CSV, beside its check's scores and model versions")
    ex.add_argument("--out", type=Path, help="file to write (default: standard output)")
    sub.add_parser("summary", help="how many checks have feedback, and how many verdicts were disputed")
    args = p.parse_args(argv)
    r = redis.Redis.from_url(ServiceSettings().tool_redis_url(), decode_responses=True)
    try:
        found = list(scan(r))
    except redis.ConnectionError as e:
        print(f"deepfake-feedback: cannot reach Redis: {e}", file=sys.stderr)
        return 2
    if args.cmd == "summary":
        total = Summary()
        for _, _, fb in found:
            total.add(tally(fb.values()))
        print(json.dumps(total.as_dict(), indent=2))
        return 0
    text = write_csv(row for jid, rec, fb in found for row in csv_rows(jid, rec, fb))
    if args.out:
        args.out.write_text(text)
        print(f"{text.count(chr(10)) - 1} opinion(s) on {len(found)} check(s) written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
