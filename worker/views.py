"""The public JSON of a job (``GET /v1/checks/{id}``, the terminal event, callbacks): one
function of the job record, used by the API and the workers."""

from __future__ import annotations

import json


def job_view(rec: dict[str, str], base: str, how: str | None = None) -> dict:
    """The public JSON of a job record."""
    jid = rec["id"]
    view = {
        "id": jid,
        "state": rec.get("state"),
        "stage": rec.get("stage"),
        "message": rec.get("message"),
        "progress": {k: int(rec[k]) for k in ("done", "total") if rec.get(k)},
        "counts": json.loads(rec["counts"]) if rec.get("counts") else {},
        "input": rec.get("input"),
        "created_at": float(rec.get("created_at", 0)),
        "updated_at": float(rec.get("updated_at", 0)),
        "seen_before": how == "cached" or rec.get("seen_before") == "1",
        "links": {"self": f"{base}/v1/checks/{jid}", "events": f"{base}/v1/checks/{jid}/events",
                  "report_page": f"{base}/r/{jid}"},
    }
    if how:
        view["request"] = how
    if rec.get("same_content_as"):
        view["same_content_as"] = rec["same_content_as"]
    if rec.get("report"):
        view["report"] = json.loads(rec["report"])
    if rec.get("has_gallery") == "1":
        view["links"]["gallery"] = f"{base}/v1/checks/{jid}/gallery.png"
    if rec.get("problem"):
        view["problem"] = json.loads(rec["problem"])
    return view
