"""/v1/jobs/{id}/frames: a job's published frames as JSON (long-poll), one as a PNG, all as a zip."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from ...jobs.errors import JobNotFoundError
from ...media.masks import encode_label_png
from ...media.rle import objects_to_labels
from ..deps import Caller, Config, Store
from ..results import write_result_zip
from ..schemas import MAX_INDEX, FramesPage, error_responses

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["frames"])


@router.get("/frames", operation_id="getFrames", response_model=FramesPage, response_model_exclude_none=True,
            responses=error_responses(401, 404, 422, 503),
            summary="Published frames from `start` on; `wait` long-polls for the next one")
async def get_frames(store: Store, settings: Config, caller: Caller, job_id: str,
                     start: int = Query(0, ge=0, le=MAX_INDEX),
                     limit: int = Query(100, ge=1, le=1000),
                     wait: float = Query(0, ge=0, description="seconds to wait for a frame (at most 30)")) -> dict:
    page = await store.frames(job_id, start, limit, min(wait, settings.max_wait_seconds), caller)
    frames = [{k: v for k, v in f.items() if k != "published_at"} for f in page.frames]
    return {"frames": frames, "next": page.next, "status": page.status}


@router.get("/frames/{index}.png", operation_id="getFramePng", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "indexed PNG with the job's palette"},
    **error_responses(401, 404, 422, 503)}, summary="One published frame as an indexed PNG")
async def get_frame_png(store: Store, caller: Caller, job_id: str,
                        index: int = Path(ge=0, le=MAX_INDEX)) -> Response:
    job = await store.get(job_id, caller)
    page = await store.frames(job_id, index, 1)
    if not page.frames or page.frames[0]["index"] != index:
        raise JobNotFoundError(f"frame {index} of job {job_id} is not published" + ("" if job.ended else " yet"))
    labels = objects_to_labels(page.frames[0]["objects"], (job.height, job.width))
    return Response(encode_label_png(labels, job.palette_bytes()), media_type="image/png")


@router.get("/result.zip", operation_id="getResult", response_class=FileResponse, responses={
    200: {"content": {"application/zip": {}}, "description": "every frame as a DAVIS indexed PNG"},
    **error_responses(401, 404, 409, 422, 503)}, summary="Every frame as DAVIS PNGs, once the job has succeeded")
async def get_result(store: Store, caller: Caller, job_id: str) -> FileResponse:
    await store.get(job_id, caller)
    path = await write_result_zip(store, job_id)
    return FileResponse(path, media_type="application/zip", filename=f"{job_id}.zip",
                        background=BackgroundTask(path.unlink, missing_ok=True))
