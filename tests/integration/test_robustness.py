"""Load and hostile input, against real servers: many clients at once, a burst of submissions, schemathesis
on the OpenAPI document (every route, with the links between them), malformed gRPC messages.

Sizes come from the environment so that `make load` and `make fuzz` run the long versions:
AGSS_LOAD_CLIENTS (long-polls and gRPC streams each), AGSS_LOAD_BURST (submissions), AGSS_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

from service.client import Client
from service.grpc.pb import segmentation_pb2 as pb2
from service.grpc.pb import segmentation_pb2_grpc as pb2_grpc

from .conftest import FIRST_MASK, frames_zip


def _temp_files() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("agss-*") if not p.name.startswith("agss-job-")}


def poll_status(url: str, stop, out) -> None:
    """GET url every 50 ms until `stop` is set; puts {"ms": [latencies], "codes": {status: count}} on `out`."""
    ms, codes = [], {}
    with httpx.Client(timeout=120) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = http.get(url)
            ms.append((time.perf_counter() - t0) * 1000)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            stop.wait(0.05)
    out.put({"ms": ms, "codes": codes})


def test_many_clients_and_a_burst_of_submissions(make_stack, tmp_path):
    clients = int(os.environ.get("AGSS_LOAD_CLIENTS", "40"))
    burst = int(os.environ.get("AGSS_LOAD_BURST", "20"))
    n = 12
    stack = make_stack(workers=1, grpc=True, agss_max_queued_jobs=burst // 2, agss_frame_delay_seconds=0.1)
    video = frames_zip(tmp_path / "v.zip", n)
    with Client(stack.url) as c:
        job = c.submit(video, FIRST_MASK)
    statuses: dict[int, int] = {}

    async def long_poll(http: httpx.AsyncClient) -> int:
        start, got = 0, 0
        while True:
            r = await http.get(f"/v1/jobs/{job.id}/frames", params={"start": start, "wait": 10})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            page = r.json()
            got += len(page["frames"])
            start = page["next"]
            if not page["frames"] and page["status"] in ("succeeded", "failed", "cancelled"):
                return got

    async def stream(channel: grpc.aio.Channel) -> int:
        stub = pb2_grpc.SegmentationStub(channel)
        return len([f async for f in stub.StreamFrames(pb2.StreamFramesRequest(job_id=job.id))])


    async def submit(http: httpx.AsyncClient) -> int:
        files = {"video": ("v.zip", video.read_bytes()), "masks": ("m.png", FIRST_MASK.read_bytes())}
        r = await http.post("/v1/jobs", files=files)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "queue_full"
        return r.status_code

    async def main() -> tuple[list[int], list[int], list[int]]:
        limits = httpx.Limits(max_connections=clients * 2 + burst + 8)
        async with httpx.AsyncClient(base_url=stack.url, timeout=120, limits=limits) as http, \
                grpc.aio.insecure_channel(stack.grpc_target) as channel:
            polls = [asyncio.create_task(long_poll(http)) for _ in range(clients)]
            streams = [asyncio.create_task(stream(channel)) for _ in range(clients)]
            codes = await asyncio.gather(*(submit(http) for _ in range(burst)))
            got = await asyncio.gather(*polls)
            sent = await asyncio.gather(*streams)
            return got, sent, codes

    # Status calls come from a process of their own: in this one they would wait for this event loop, busy
    # with the 2 x clients, and measure the test's own lag rather than the API's.
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    poller = ctx.Process(target=poll_status, args=(f"{stack.url}/v1/jobs/{job.id}", stop, out), daemon=True)
    poller.start()
    try:
        got, sent, codes = asyncio.run(main())
    finally:
        stop.set()
        polled = out.get(timeout=60)
        poller.join(30)
    status_ms = polled["ms"]
    for code, k in polled["codes"].items():
        statuses[code] = statuses.get(code, 0) + k
    assert got == [n] * clients and sent == [n] * clients  # every client got every frame
    assert set(statuses) <= {200, 202, 429}, statuses  # nothing but the documented refusal
    assert 202 in codes and 429 in codes
    p99 = float(np.percentile(status_ms, 99))
    print(f"\nload: {clients} long-polls + {clients} gRPC streams, burst of {burst} submissions: "
          f"{codes.count(202)} accepted, {codes.count(429)} refused (429); status calls: {len(status_ms)}, "
          f"median {np.median(status_ms):.1f} ms, p99 {p99:.1f} ms")
    assert httpx.get(stack.url + "/readyz").json()["status"] == "ready"


def test_schemathesis_finds_no_server_error(make_stack, tmp_path):
    examples = os.environ.get("AGSS_FUZZ_EXAMPLES", "8")
    # Long-polls capped at 1 s: the fuzzer reuses the sessions it creates, whose frames would otherwise
    # be waited for 30 s a request (a minute of the run, for nothing more than the 30 s path shows).
    stack = make_stack(workers=1, agss_model="flow-only", agss_max_queued_jobs=5, agss_max_wait_seconds=1)
    before = _temp_files()
    report = tmp_path / "report"
    p = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "run", f"{stack.url}/openapi.json",
                        "--checks", "not_a_server_error", "--max-examples", examples, "--seed", "1",
                        "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1",
                        "--report", "junit", "--report-dir", str(report), "--request-timeout", "60",
                        "--suppress-health-check", "all"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert httpx.get(f"{stack.url}/readyz").status_code == 200  # nothing crashed
    assert all(w.poll() is None for w in stack.workers)
    time.sleep(1)
    assert _temp_files() <= before, _temp_files() - before  # no upload or result file left behind
    lines = [ln for ln in p.stdout.splitlines() if "passed" in ln or "Test cases" in ln or " (in " in ln]
    print("\n" + "\n".join(lines)[-1500:])


def test_malformed_grpc_messages_get_a_status_and_the_server_goes_on(make_stack, tmp_path):
    stack = make_stack(workers=0, grpc=True)
    rng = np.random.default_rng(0)
    channel = grpc.insecure_channel(stack.grpc_target)
    codes: dict[str, int] = {}
    methods = {"GetJob": "unary_unary", "CancelJob": "unary_unary", "AddPrompts": "unary_unary",
               "StreamFrames": "unary_stream", "CreateJob": "stream_unary", "Track": "stream_stream"}
    for method, kind in methods.items():
        call = getattr(channel, kind)(f"/agss.v1.Segmentation/{method}", request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
        for i in range(20):
            body = rng.bytes(int(rng.integers(0, 400)))
            try:
                if kind == "unary_unary":
                    call(body, timeout=30)
                elif kind == "unary_stream":
                    list(call(body, timeout=30))
                elif kind == "stream_unary":
                    call(iter([body, rng.bytes(50)]), timeout=30)
                else:
                    list(call(iter([body]), timeout=30))
            except grpc.RpcError as e:
                codes[e.code().name] = codes.get(e.code().name, 0) + 1
                # bytes that do not decode: INVALID_ARGUMENT; bytes that happen to decode: what the message asks
                assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.RESOURCE_EXHAUSTED), (method, i, e.code(), e.details())
    # valid messages with hostile values
    stub = pb2_grpc.SegmentationStub(channel)
    for job_id in ("", "../../etc/passwd", "x" * 10_000, "\u2603"):
        for fn in (lambda j: stub.GetJob(pb2.GetJobRequest(job_id=j)),
                   lambda j: list(stub.StreamFrames(pb2.StreamFramesRequest(job_id=j, start_index=-5))),
                   lambda j: stub.AddPrompts(pb2.AddPromptsRequest(job_id=j, prompts_json="{]"))):
            try:
                fn(job_id)
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), e.details()
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == 1
    channel.close()
    print(f"\ngrpc fuzz: status codes {codes}")
