"""The gRPC API: chunked upload, resumable streams, many streams, status codes, health, reflection."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.client import Client, ClientError, GrpcClient

from ..conftest import ROOT
from .conftest import FIRST_MASK, frames_zip

PROTO_ONLY_CLIENT = r'''
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I: only this folder, no project code
import grpc
from agss.v1 import segmentation_pb2 as pb, segmentation_pb2_grpc as rpc

target, video, masks, out = sys.argv[1:5]
stub = rpc.SegmentationStub(grpc.insecure_channel(target))

def requests():
    yield pb.CreateJobRequest(spec=pb.JobSpec(masks=open(masks, "rb").read(), masks_filename="m.png",
                                              video_filename="frames.zip"))
    with open(video, "rb") as f:
        while chunk := f.read(256 * 1024):
            yield pb.CreateJobRequest(video_chunk=chunk)

job = stub.CreateJob(requests())
def event(e):
    return {"type": e.type, "id": e.id, **{k: getattr(e, k) for k in ("score", "ratio") if e.HasField(k)}}

frames = [{"index": f.index, "objects": [{"id": o.id, "rle": {"size": list(o.rle.size), "counts": o.rle.counts},
                                          "area": o.area, "bbox": list(o.bbox), "score": round(o.score, 4)}
                                         for o in f.objects], "events": [event(e) for e in f.events]}
          for f in stub.StreamFrames(pb.StreamFramesRequest(job_id=job.id, start_index=0))]
json.dump({"job": job.id, "frames": frames}, open(out, "w"))
'''


def test_client_from_proto_alone_gets_the_http_masks(make_stack, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    from grpc_tools import protoc

    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                        str(ROOT / "proto/agss/v1/segmentation.proto")]) == 0
    (gen / "client.py").write_text(PROTO_ONLY_CLIENT)
    stack = make_stack(workers=1, grpc=True)
    video = frames_zip(tmp_path / "v.zip", 8)
    # run from the generated folder, with no project code importable
    subprocess.run([sys.executable, "-I", "client.py", stack.grpc_target, str(video), str(FIRST_MASK),
                    str(tmp_path / "out.json")], cwd=gen, check=True, timeout=300,
                   env={"PYTHONPATH": str(gen)})
    got = json.loads((tmp_path / "out.json").read_text())
    with Client(stack.url) as c:
        http_frames = [f.as_dict() for f in c.frames(got["job"])]
    assert [f["index"] for f in got["frames"]] == list(range(8))
    assert got["frames"] == http_frames


def test_disconnect_and_resume_misses_nothing(make_stack, tmp_path):
    stack = make_stack(workers=1, grpc=True)
    video = frames_zip(tmp_path / "v.zip", 16)
    with GrpcClient(stack.grpc_target, chunk_bytes=100_000) as c:
        job = c.submit(video, FIRST_MASK)
        seen = []
        call = c.stream_frames(job.id, 0)
        for f in call:
            seen.append(f.index)
            if len(seen) == 3:
                call.cancel()
                break
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.CANCELLED
        seen += [f.index for f in c.frames(job.id, seen[-1] + 1)]
        assert seen == list(range(16))
        assert c.status(job.id).status == "succeeded"


def test_fifty_concurrent_streams_all_get_every_frame(make_stack, tmp_path):
    stack = make_stack(workers=1, grpc=True)
    n = 12
    video = frames_zip(tmp_path / "v.zip", n)
    results: dict[int, list[int]] = {}
    with GrpcClient(stack.grpc_target) as c:
        job = c.submit(video, FIRST_MASK)

        def watch(k: int) -> None:
            with GrpcClient(stack.grpc_target) as own:
                results[k] = [f.index for f in own.stream_frames(job.id, 0, timeout=120)]

        threads = [threading.Thread(target=watch, args=(k,)) for k in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    assert len(results) == 50
    assert all(v == list(range(n)) for v in results.values())


def test_status_codes_health_and_reflection(make_stack, tmp_path):
    stack = make_stack(workers=0, grpc=True, agss_max_upload_bytes=2 << 20, agss_max_queued_jobs=1)
    video = frames_zip(tmp_path / "v.zip", 3)
    with GrpcClient(stack.grpc_target) as c:
        def code_of(fn) -> tuple[str, str]:
            """(gRPC status, the service's error code) of a call that must fail."""
            with pytest.raises(ClientError) as e:
                fn()
            assert e.value.message
            return e.value.grpc_status, e.value.code

        def raw_status(fn) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as e:
                fn()
            assert e.value.details()
            return e.value.code()

        pb2 = c.pb2
        garbage = tmp_path / "g.mp4"
        garbage.write_bytes(b"\0" * 5000)
        assert code_of(lambda: c.submit(garbage, FIRST_MASK)) == ("INVALID_ARGUMENT", "bad_input")
        big = tmp_path / "big.zip"
        big.write_bytes(b"\0" * (3 << 20))
        assert code_of(lambda: c.submit(big, FIRST_MASK)) == ("RESOURCE_EXHAUSTED", "too_large")
        only_chunks = iter([pb2.CreateJobRequest(video_chunk=b"abc")])
        assert raw_status(lambda: c.stub.CreateJob(only_chunks)) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: c.status("nope")) == ("NOT_FOUND", "not_found")
        assert raw_status(lambda: list(c.stream_frames("nope"))) == grpc.StatusCode.NOT_FOUND
        job = c.submit(video, FIRST_MASK, idempotency_key="same")
        assert c.submit(video, FIRST_MASK, idempotency_key="same").id == job.id
        assert code_of(lambda: c.submit(video, FIRST_MASK)) == ("RESOURCE_EXHAUSTED", "queue_full")
        assert c.cancel(job.id).status == "cancelled"
        assert code_of(lambda: c.cancel(job.id)) == ("FAILED_PRECONDITION", "conflict")
        assert raw_status(lambda: list(c.stream_frames(job.id))) == grpc.StatusCode.CANCELLED

        health = health_pb2_grpc.HealthStub(c.channel)
        for name in ("", "agss.v1.Segmentation"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(c.channel)
        resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert "agss.v1.Segmentation" in names and "grpc.health.v1.Health" in names


def corrupt_png(size=(854, 480)) -> bytes:
    """A PNG whose header is sound (it passes the checks at submission) and whose pixels do not decode."""
    import cv2
    import numpy as np

    _, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    data = bytearray(png.tobytes())
    start = data.find(b"IDAT") + 8
    for k in range(start, start + 400):
        data[k] ^= 0x5A
    return bytes(data)


def test_failed_job_ends_the_stream_with_its_reason(make_stack, tmp_path):
    stack = make_stack(workers=1, grpc=True)
    # a zip whose second frame does not decode: accepted (its header is fine), fails in the worker
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf, zipfile.ZipFile(frames_zip(tmp_path / "v.zip", 2)) as good:
        zf.writestr("00000.jpg", good.read(good.namelist()[0]))
        zf.writestr("00001.png", corrupt_png())
    with GrpcClient(stack.grpc_target) as c:
        job = c.submit(bad, FIRST_MASK)
        with pytest.raises(grpc.RpcError) as e:
            list(c.stream_frames(job.id, 0, timeout=60))
        assert e.value.code() == grpc.StatusCode.ABORTED and "cannot decode" in e.value.details()
        deadline = time.monotonic() + 30
        while c.status(job.id).status != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert c.status(job.id).error_code == "bad_input"
