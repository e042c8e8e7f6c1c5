"""A medium uploaded as a multipart form: streamed to the job's folder in chunks (never
whole in memory), its name cleaned for display and never used on disk."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from detector.vocabulary import Problem

from .context import SETTINGS, STORE, as_bool, callback_url_of, enqueue
from .problems import ApiProblem

BIDI_AND_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
MAX_NAME_CHARS = 120


def display_name(raw: str | None) -> str:
    """A file name as the report shows it: the last path part, without control, direction-
    override or invisible characters, at most 120 characters. Pages escape it; it never
    names a file on disk."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in BIDI_AND_INVISIBLE.sub("", name) if c.isprintable()).strip(" .")
    if not name:
        return "upload"
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext}" if dot and len(ext) <= 5 else ""
        name = name[: MAX_NAME_CHARS - len(ext) - 1] + "…" + ext
    return name


def stored_name(display: str) -> str:
    """The upload's name on disk: fixed, with the extension only if it is plain (the probe
    reads the content, not the name)."""
    ext = Path(display).suffix.lower()
    return "upload" + (ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else "")


async def _next_part(reader):
    try:
        return await reader.next()
    except LineTooLong as e:
        if "filename" in str(e):
            raise ApiProblem(400, Problem.BAD_FILE_NAME, "The file name is too long",
                             "The upload's file name is longer than 8,000 characters; rename the file.") from e
        raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                         "A header of the form is too long.") from e
    except (ValueError, KeyError, AssertionError, HttpProcessingError) as e:
        if "filename" in str(e):  # e.g. a NUL or a line break in the name: the header is refused
            raise ApiProblem(400, Problem.BAD_FILE_NAME, "The file name cannot be read",
                             "The upload's file name holds characters a form may not carry; rename the file.") from e
        raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                         f'Send a multipart form with the medium in a field "file" ({type(e).__name__}).') from e


async def create_from_upload(request: web.Request, owner: str) -> tuple[str, str, str | None]:
    """The job of an uploaded file: (job id, "new", its callback URL). Fields before the file
    are read ("fresh", "retain", "callback_url"); the file is streamed to disk."""
    s = request.app[SETTINGS]
    try:
        reader = await request.multipart()
    except (ValueError, KeyError, AssertionError, HttpProcessingError) as e:
        raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                         "A multipart upload needs a boundary in its Content-Type; send a form with a field "
                         "\"file\".") from e
    fresh, callback, retain = False, None, True
    while True:
        part = await _next_part(reader)
        if part is None:
            raise ApiProblem(400, Problem.BAD_REQUEST, "No file in the upload", 'Send the medium in a form field "file".')
        if part.name == "fresh":
            fresh = as_bool(await part.text())
            continue
        if part.name == "retain":
            retain = as_bool(await part.text())
            continue
        if part.name == "callback_url":
            callback = await callback_url_of(request, await part.text())
            continue
        if part.name == "file":
            break
    name = display_name(part.filename)
    store = request.app[STORE]
    job_id, _ = await store.create(input=name, owner=owner, fresh=fresh, upload=True, retain=retain)
    folder = s.work_dir(job_id) / "upload"
    path = folder / stored_name(name)
    loop = asyncio.get_running_loop()
    try:  # whatever goes wrong from here, no record stays queued and no file stays behind
        await loop.run_in_executor(None, lambda: folder.mkdir(parents=True, exist_ok=True))
        size = 0
        f = await loop.run_in_executor(None, open, path, "wb")
        try:
            while True:
                try:
                    chunk = await part.read_chunk(1 << 20)
                except (ValueError, AssertionError, HttpProcessingError) as e:
                    raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                                     f"The form's file part could not be read ({type(e).__name__}).") from e
                if not chunk:
                    break
                size += len(chunk)
                if size > s.max_upload_bytes:
                    raise ApiProblem(413, Problem.TOO_LARGE, "The file is too large",
                                     f"Uploads are limited to {s.max_upload_bytes / 2**20:.0f} MB.")
                await loop.run_in_executor(None, f.write, chunk)
        finally:
            await loop.run_in_executor(None, f.close)
        if size == 0:
            raise ApiProblem(400, Problem.BAD_REQUEST, "The file is empty", "The uploaded file has no content.")
        await enqueue(request, job_id, str(path))
    except BaseException:
        await loop.run_in_executor(None, lambda: shutil.rmtree(s.work_dir(job_id), ignore_errors=True))
        await store.forget(job_id)
        raise
    return job_id, "new", callback
