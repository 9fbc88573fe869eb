"""Python client of the HTTP API: submit, status, iterate frames (long-polling), download results."""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(self, base_url: str, timeout: float = 120.0):
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise ClientError(r.status_code, err["code"], err["message"])
            except (ValueError, KeyError, TypeError):
                raise ClientError(r.status_code, "http_error", r.text[:200]) from None
        return r

    def submit(self, video: str | Path, masks: str | Path, options: dict | None = None,
               idempotency_key: str | None = None) -> dict:
        """Upload a video file, zip or folder of frames, and masks (PNG, zip or folder of PNGs)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = {"options": json.dumps(options)} if options else {}
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agss-submit-")))
            v = stack.enter_context(open(_as_file(Path(video), tmp), "rb"))
            m = stack.enter_context(open(_as_file(Path(masks), tmp), "rb"))
            files = {"video": (Path(v.name).name, v), "masks": (Path(m.name).name, m)}
            return self._check(self.http.post("/v1/jobs", files=files, data=data, headers=headers)).json()

    def status(self, job_id: str) -> dict:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def cancel(self, job_id: str) -> dict:
        return self._check(self.http.delete(f"/v1/jobs/{job_id}")).json()

    def frames(self, job_id: str, start: int = 0, wait: float = 10.0, limit: int = 100) -> Iterator[dict]:
        """Every frame from `start` until the job ends (long-polls; raises ClientError if it fails)."""
        while True:
            page = self._check(self.http.get(f"/v1/jobs/{job_id}/frames",
                                             params={"start": start, "limit": limit, "wait": wait})).json()
            yield from page["frames"]
            start = page["next"]
            if not page["frames"] and page["status"] in ("succeeded", "failed", "cancelled"):
                if page["status"] != "succeeded":
                    job = self.status(job_id)
                    err = job.get("error") or {}
                    raise ClientError(200, err.get("code", page["status"]),
                                      err.get("message", f"job {page['status']}"))
                return

    def frame_png(self, job_id: str, index: int) -> bytes:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/frames/{index}.png")).content

    def download_result(self, job_id: str, path: str | Path) -> Path:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/result.zip") as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            with open(path, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        return Path(path)


class GrpcClient:
    """Client of the gRPC API: chunked upload, resumable frame streams."""

    def __init__(self, target: str, chunk_bytes: int = 1 << 20):
        import grpc

        from .grpc.stubs import load

        self.grpc = grpc
        self.pb2, pb2_grpc = load()
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = pb2_grpc.SegmentationStub(self.channel)
        self.chunk_bytes = chunk_bytes

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create_job(self, video: str | Path, masks: str | Path, options: dict | None = None,
                   idempotency_key: str | None = None, timeout: float = 600):
        pb2 = self.pb2
        with tempfile.TemporaryDirectory(prefix="agss-submit-") as tmp:
            vpath, mpath = _as_file(Path(video), Path(tmp)), _as_file(Path(masks), Path(tmp))

            def requests():
                yield pb2.CreateJobRequest(spec=pb2.JobSpec(
                    masks=mpath.read_bytes(), masks_filename=mpath.name, video_filename=vpath.name,
                    options_json=json.dumps(options) if options else "", idempotency_key=idempotency_key or ""))
                with open(vpath, "rb") as f:
                    while chunk := f.read(self.chunk_bytes):
                        yield pb2.CreateJobRequest(video_chunk=chunk)

            return self.stub.CreateJob(requests(), timeout=timeout)

    def get_job(self, job_id: str):
        return self.stub.GetJob(self.pb2.GetJobRequest(job_id=job_id))

    def cancel(self, job_id: str):
        return self.stub.CancelJob(self.pb2.CancelJobRequest(job_id=job_id))

    def stream_frames(self, job_id: str, start: int = 0, timeout: float | None = None):
        """The raw server stream (a grpc call: iterate it, or .cancel() it)."""
        return self.stub.StreamFrames(self.pb2.StreamFramesRequest(job_id=job_id, start_index=start),
                                      timeout=timeout)

    def frames(self, job_id: str, start: int = 0, retries: int = 5) -> Iterator[dict]:
        """Every frame from `start` as a dict like the HTTP API's; reconnects after a broken stream,
        resuming after the last frame received."""
        nxt, failures = start, 0
        while True:
            try:
                for f in self.stream_frames(job_id, nxt):
                    nxt = f.index + 1
                    failures = 0
                    yield {"index": f.index, "published_at": f.published_at, "objects": [
                        {"id": o.id, "rle": {"size": list(o.rle.size), "counts": o.rle.counts}, "area": o.area,
                         "bbox": list(o.bbox)} for o in f.objects]}
                return
            except self.grpc.RpcError as e:
                if e.code() != self.grpc.StatusCode.UNAVAILABLE or failures >= retries:
                    raise
                failures += 1


def _as_file(path: Path, tmp: Path) -> Path:
    """A folder becomes a zip of its files (stored, not compressed: frames are compressed already)."""
    if not path.is_dir():
        return path
    out = tmp / f"{path.name or 'frames'}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            zf.write(f, f.name)
    return out
