"""The package as a user installs it: a wheel built from this tree, installed into a new virtual
environment, used from an empty folder where nothing of the checkout is importable.

The new environment takes its dependencies from the test environment (a path file), so that the
test does not download them again; `make package-check` does the same with a fully fresh install.
"""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
from pathlib import Path

import pytest

from service.runtime.redis import free_port

from ..conftest import REAL, ROOT, copy_frames, require, wait_ready

PROTO_CLIENT = r'''
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I: only this folder, no project code
import grpc
import segmentation_pb2 as pb, segmentation_pb2_grpc as rpc

target, video, masks = sys.argv[1:4]
stub = rpc.SegmentationStub(grpc.insecure_channel(target))

def requests():
    yield pb.CreateJobRequest(spec=pb.JobSpec(masks=open(masks, "rb").read(), masks_filename="m.png",
                                              video_filename="frames.zip"))
    yield pb.CreateJobRequest(video_chunk=open(video, "rb").read())

job = stub.CreateJob(requests(), timeout=60)
print(len(list(stub.StreamFrames(pb.StreamFramesRequest(job_id=job.id), timeout=120))))
'''


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp / "dist")],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp / "dist").glob("agss_vos_service-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    py = env / "bin" / "python"
    own = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                         capture_output=True, text=True).stdout.strip()
    (Path(own) / "_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300, capture_output=True)
    return env


def run(venv: Path, *args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGSS_") and k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def test_installed_package_is_self_contained(venv, tmp_path):
    where = run(venv, "python", "-c", "import service, service.grpc.pb.segmentation_pb2 as pb; print(service.__file__);"
                "print(pb.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(venv) in line and str(ROOT) not in line  # imported from the venv, not the checkout
    h = run(venv, "agss-vos", "serve", "--help", cwd=tmp_path)
    assert h.returncode == 0 and "AGSS_MODELS_DIR" in h.stdout and "AGSS_REDIS_URL" in h.stdout


def test_segment_with_the_bundled_default_model(venv, tmp_path):
    frames = copy_frames(require(REAL / "camel"), tmp_path / "frames", 3)
    p = run(venv, "agss-vos", "segment", str(frames), "--masks", str(REAL / "camel" / "Annotations" / "00000.png"),
            "--out", "out", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "network 512x288" in p.stderr and len(list((tmp_path / "out").glob("*.png"))) == 3


def test_serve_answers_and_a_client_from_the_shipped_proto_gets_frames(venv, tmp_path):
    """`agss-vos serve` from an empty folder (embedded Redis in ./.agss); a gRPC client generated from the
    .proto that ships in the package submits a job and streams its frames; SIGTERM stops it cleanly."""
    http, grpc_port = free_port(), free_port()
    env = {"AGSS_HTTP_PORT": str(http), "AGSS_GRPC_PORT": str(grpc_port), "AGSS_MODEL": "flow-only",
           "AGSS_LONG_SIDE": "128"}
    proc = subprocess.Popen([str(venv / "bin" / "agss-vos"), "serve"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "serve.log", "wb"),
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("AGSS_")}, **env})
    try:
        wait_ready(f"http://127.0.0.1:{http}/readyz", {"serve": (proc, tmp_path / "serve.log")})
        gen = tmp_path / "gen"
        gen.mkdir()
        proto = run(venv, "python", "-c", "import service.grpc.pb as p, pathlib; "
                    "print(pathlib.Path(p.__file__).with_name('segmentation.proto'))", cwd=tmp_path).stdout.strip()
        from grpc_tools import protoc

        assert protoc.main(["protoc", f"-I{Path(proto).parent}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                            proto]) == 0
        (gen / "client.py").write_text(PROTO_CLIENT)
        from ..integration.conftest import FIRST_MASK, frames_zip

        video = frames_zip(tmp_path / "v.zip", 3)
        c = subprocess.run([sys.executable, "-I", "client.py", f"127.0.0.1:{grpc_port}", str(video), str(FIRST_MASK)],
                           cwd=gen, capture_output=True, text=True, timeout=180, env={"PYTHONPATH": str(gen)})
        assert c.returncode == 0 and c.stdout.strip() == "3", c.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert (tmp_path / ".agss" / "redis").is_dir()
