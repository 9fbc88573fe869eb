"""/v1/jobs: submit a job, read its status, cancel it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Body, File, Form, Header, Response, UploadFile

from ...jobs import intake
from ..deps import Caller, Config, Store
from ..schemas import JobOut, error_responses, links

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", operation_id="createJob", status_code=202, response_model=JobOut,
             responses={**error_responses(400, 401, 413, 415, 422, 429, 503),
                        **links(202, "job_id", "getJob", "cancelJob", "getFrames", "addJobPrompts", "getResult")},
             summary="Submit a video and the masks of its objects")
async def create_job(store: Store, settings: Config, caller: Caller, response: Response,
                     video: UploadFile = File(..., description="video file (mp4, webm, ...) or zip of frames"),
                     masks: UploadFile = File(..., description="indexed PNG of the first frame, zip of PNGs "
                                                               "named after frames, or JSON prompts (RLE, polygons, "
                                                               "boxes, clicks; docs/PROMPTS.md)"),
                     options: str | None = Form(None, description='JSON: {"model", "flow", "long_side"}'),
                     idempotency_key: str | None = Header(None, max_length=200,
                                                          description="a retry with the same key returns the "
                                                                      "same job")) -> dict:
    if idempotency_key:
        existing = await store.find_idempotent(idempotency_key, caller)
        if existing:
            job = await store.get(existing, caller)
            response.headers["Location"] = f"/v1/jobs/{job.id}"
            return job.public()
    opts = intake.parse_options(options)
    with intake.upload_folder() as folder:
        vpath = folder / f"video{intake.safe_suffix(video.filename, '.bin')}"
        mpath = folder / f"masks{intake.safe_suffix(masks.filename, '.png')}"
        for upload, path, limit, what in ((video, vpath, settings.max_upload_bytes, "video"),
                                          (masks, mpath, settings.max_mask_bytes, "masks")):
            with intake.LimitedFile(path, limit, what) as out:
                await asyncio.to_thread(out.copy_from, upload.file)
        job = await intake.accept(store, vpath, video.filename or "", mpath, masks.filename or "", opts,
                                  idempotency_key, caller)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job.public()


@router.get("/{job_id}", operation_id="getJob", response_model=JobOut, responses=error_responses(401, 404, 422, 503),
            summary="A job's status")
async def get_job(store: Store, caller: Caller, job_id: str) -> dict:
    return (await store.get(job_id, caller)).public()


@router.delete("/{job_id}", operation_id="cancelJob",
               response_model=JobOut, responses=error_responses(401, 404, 409, 422, 503),
               summary="Cancel a queued or running job")
async def cancel_job(store: Store, caller: Caller, job_id: str) -> dict:
    return (await store.cancel(job_id, caller)).public()


PROMPTS_EXAMPLE = {"frames": {"40": {"1": {"box": [120, 80, 300, 260]}, "3": {"points": [[200, 150, 1]]},
                                     "2": {"remove": True}}}}


@router.post("/{job_id}/prompts", operation_id="addJobPrompts", status_code=202, response_model=JobOut,
             responses=error_responses(400, 401, 404, 409, 413, 422, 503),
             summary="Add prompts (masks, boxes, clicks, removals) for frames the job has not reached",
             description="The same JSON as a prompts file (docs/PROMPTS.md). A mask for an object already "
                         "tracked corrects it from that frame; an empty mask or `remove` stops tracking it "
                         "there. Frames already published, or the one being computed, are refused with 409 "
                         "naming the frame the job is on; all prompts of a request are taken, or none.")
async def add_prompts(store: Store, caller: Caller, job_id: str,
                      prompts: dict = Body(..., openapi_examples={"box": {"value": PROMPTS_EXAMPLE}})) -> dict:
    job = await store.get(job_id, caller)
    frames, new_ids = await asyncio.to_thread(intake.job_prompts, job, prompts)
    return (await store.add_prompts(job_id, frames, new_ids)).public()
