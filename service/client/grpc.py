"""Client of the gRPC API: chunked upload, resumable frame streams; same results and errors as HTTP."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from ..grpc.interceptor import CODE_KEY
from ..grpc.pb import segmentation_pb2 as pb2
from ..grpc.pb import segmentation_pb2_grpc as pb2_grpc
from .files import as_file
from .types import ClientError, FrameResult, JobInfo


def job_info(m: pb2.Job) -> JobInfo:
    return JobInfo(id=m.id, status=m.status, frames_total=m.frames_total, frames_done=m.frames_done,
                   objects=list(m.objects), width=m.width, height=m.height, error_code=m.error_code,
                   error_message=m.error_message, created_at=m.created_at, started_at=m.started_at,
                   finished_at=m.finished_at)


def event_dict(e: pb2.Event) -> dict:
    out = {"type": e.type, "id": e.id}
    for name in ("score", "ratio"):
        if e.HasField(name):
            out[name] = getattr(e, name)
    return out


def frame_result(f: pb2.Frame) -> FrameResult:
    objects = [{"id": o.id, "rle": {"size": list(o.rle.size), "counts": o.rle.counts}, "area": o.area,
                "bbox": list(o.bbox), "score": round(o.score, 4)} for o in f.objects]
    return FrameResult(f.index, objects, [event_dict(e) for e in f.events], f.published_at)


def client_error(e: grpc.RpcError) -> ClientError:
    code = dict(e.trailing_metadata() or ()).get(CODE_KEY) or e.code().name.lower()
    return ClientError(code, e.details() or "", grpc_status=e.code().name)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as e:
        raise client_error(e) from None


class _Authorized:
    """A stub whose every call carries the API key (metadata `authorization: Bearer KEY`)."""

    def __init__(self, stub, key: str | None):
        self._stub, self.metadata = stub, (("authorization", f"Bearer {key}"),) if key else ()

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)

        def call(*args, **kwargs):
            return method(*args, metadata=self.metadata, **kwargs)

        return call


class GrpcClient:
    pb2 = pb2

    def __init__(self, target: str, chunk_bytes: int = 1 << 20, key: str | None = None):
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = _Authorized(pb2_grpc.SegmentationStub(self.channel), key)
        self.chunk_bytes = chunk_bytes

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, video: str | Path, masks: str | Path, options: dict | None = None,
               idempotency_key: str | None = None, timeout: float = 600) -> JobInfo:
        with tempfile.TemporaryDirectory(prefix="agss-submit-") as tmp:
            vpath, mpath = as_file(Path(video), Path(tmp)), as_file(Path(masks), Path(tmp))

            def requests():
                yield pb2.CreateJobRequest(spec=pb2.JobSpec(
                    masks=mpath.read_bytes(), masks_filename=mpath.name, video_filename=vpath.name,
                    options_json=json.dumps(options) if options else "", idempotency_key=idempotency_key or ""))
                with open(vpath, "rb") as f:
                    while chunk := f.read(self.chunk_bytes):
                        yield pb2.CreateJobRequest(video_chunk=chunk)

            with _errors():
                return job_info(self.stub.CreateJob(requests(), timeout=timeout))

    def status(self, job_id: str) -> JobInfo:
        with _errors():
            return job_info(self.stub.GetJob(pb2.GetJobRequest(job_id=job_id)))

    def cancel(self, job_id: str) -> JobInfo:
        with _errors():
            return job_info(self.stub.CancelJob(pb2.CancelJobRequest(job_id=job_id)))

    def add_prompts(self, job_id: str, prompts: dict) -> JobInfo:
        """Prompts for frames the job has not reached (docs/PROMPTS.md); all are taken, or none."""
        request = pb2.AddPromptsRequest(job_id=job_id, prompts_json=json.dumps(prompts))
        with _errors():
            return job_info(self.stub.AddPrompts(request))

    def stream_frames(self, job_id: str, start: int = 0, timeout: float | None = None):
        """The raw server stream (a grpc call: iterate it, or .cancel() it)."""
        return self.stub.StreamFrames(pb2.StreamFramesRequest(job_id=job_id, start_index=start), timeout=timeout)

    def frames(self, job_id: str, start: int = 0, retries: int = 5) -> Iterator[FrameResult]:
        """Every frame from `start`; reconnects after a broken stream, resuming after the last frame
        received. Raises ClientError when the job fails or is cancelled."""
        nxt, failures = start, 0
        while True:
            try:
                for f in self.stream_frames(job_id, nxt):
                    nxt = f.index + 1
                    failures = 0
                    yield frame_result(f)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or failures >= retries:
                    raise client_error(e) from None
                failures += 1
