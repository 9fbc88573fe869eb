"""Client of the HTTP API: submit, status, iterate frames (long-polling), download results."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx

from .files import as_file
from .types import ClientError, FrameResult, JobInfo


def job_info(d: dict) -> JobInfo:
    err = d.get("error") or {}
    return JobInfo(id=d["id"], status=d["status"], frames_total=d["frames_total"], frames_done=d["frames_done"],
                   objects=d["objects"], width=d["width"], height=d["height"], error_code=err.get("code", ""),
                   error_message=err.get("message", ""), created_at=d.get("created_at") or "",
                   started_at=d.get("started_at") or "", finished_at=d.get("finished_at") or "",
                   options=d.get("options") or {})


class Client:
    def __init__(self, base_url: str, timeout: float = 120.0, headers: dict | None = None, key: str | None = None):
        headers = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, url: str, **kw) -> httpx.Response:
        try:
            return self._check(self.http.request(method, url, **kw))
        except httpx.TransportError as e:
            raise ClientError("unreachable", f"{self.http.base_url}: {e}") from None

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise ClientError(err["code"], err["message"], status=r.status_code)
            except (ValueError, KeyError, TypeError):
                raise ClientError("http_error", r.text[:200], status=r.status_code) from None
        return r

    def submit(self, video: str | Path, masks: str | Path, options: dict | None = None,
               idempotency_key: str | None = None) -> JobInfo:
        """Upload a video file, zip or folder of frames, and masks (PNG, zip or folder of PNGs)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = {"options": json.dumps(options)} if options else {}
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agss-submit-")))
            v = stack.enter_context(open(as_file(Path(video), tmp), "rb"))
            m = stack.enter_context(open(as_file(Path(masks), tmp), "rb"))
            files = {"video": (Path(v.name).name, v), "masks": (Path(m.name).name, m)}
            return job_info(self._request("POST", "/v1/jobs", files=files, data=data, headers=headers).json())

    def status(self, job_id: str) -> JobInfo:
        return job_info(self._request("GET", f"/v1/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> JobInfo:
        return job_info(self._request("DELETE", f"/v1/jobs/{job_id}").json())

    def frames(self, job_id: str, start: int = 0, wait: float = 10.0, limit: int = 100) -> Iterator[FrameResult]:
        """Every frame from `start` until the job ends (long-polls; raises ClientError if it fails)."""
        while True:
            page = self._request("GET", f"/v1/jobs/{job_id}/frames",
                                 params={"start": start, "limit": limit, "wait": wait}).json()
            for f in page["frames"]:
                yield FrameResult(f["index"], f["objects"], f.get("events", []))
            start = page["next"]
            if not page["frames"] and page["status"] in ("succeeded", "failed", "cancelled"):
                if page["status"] != "succeeded":
                    job = self.status(job_id)
                    raise ClientError(job.error_code or page["status"], job.error_message or f"job {page['status']}")
                return

    def add_prompts(self, job_id: str, prompts: dict) -> JobInfo:
        """Prompts for frames the job has not reached (docs/PROMPTS.md); all are taken, or none."""
        return job_info(self._request("POST", f"/v1/jobs/{job_id}/prompts", json=prompts).json())

    # -- live sessions (frames go over the WebSocket: client/session.py) -----------------------------------
    def create_session(self, options: dict | None = None) -> dict:
        return self._request("POST", "/v1/sessions", json=options or {}).json()

    def session(self, session_id: str) -> dict:
        return self._request("GET", f"/v1/sessions/{session_id}").json()

    def end_session(self, session_id: str) -> dict:
        return self._request("POST", f"/v1/sessions/{session_id}/end").json()

    def delete_session(self, session_id: str) -> dict:
        return self._request("DELETE", f"/v1/sessions/{session_id}").json()

    def frame_png(self, job_id: str, index: int) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/frames/{index}.png").content

    def download_result(self, job_id: str, path: str | Path) -> Path:
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/result.zip") as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                with open(path, "wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
        except httpx.TransportError as e:
            raise ClientError("unreachable", f"{self.http.base_url}: {e}") from None
        return Path(path)
