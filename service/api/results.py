"""The result archive of a succeeded job: every frame as a DAVIS indexed PNG, in a zip on disk."""

from __future__ import annotations

import asyncio
import tempfile
import zipfile
from pathlib import Path

from ..jobs.errors import JobConflictError
from ..jobs.records import JobStatus
from ..jobs.store import JobStore
from ..media.masks import encode_label_png
from ..media.rle import objects_to_labels

PAGE = 200


async def write_result_zip(store: JobStore, job_id: str) -> Path:
    """A temporary zip (the caller removes it); frames are read a page at a time, never all at once."""
    job = await store.get(job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise JobConflictError(f"job {job_id} is {job.status}; the result exists once it has succeeded")
    fd, name = tempfile.mkstemp(prefix="agss-result-", suffix=".zip")
    path = Path(name)
    try:
        with open(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
            start = 0
            while True:
                page = await store.frames(job_id, start, PAGE)
                if not page.frames:
                    break
                for f in page.frames:
                    labels = objects_to_labels(f["objects"], (job.height, job.width))
                    png = await asyncio.to_thread(encode_label_png, labels, job.palette_bytes())
                    zf.writestr(f"{f['index']:05d}.png", png)
                start = page.next
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
