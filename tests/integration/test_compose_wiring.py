"""The compose stack's wiring without a Docker engine: each service's command and environment from
docker-compose.yml + compose.cpu.yml, run as plain processes on loopback against a real Redis, with
the published ports mapped to free local ports. A job goes in over HTTP and comes out over gRPC."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from service.client import Client, GrpcClient
from service.runtime.redis import free_port

from ..conftest import wait_ready
from ..deploy_files import compose_config
from .conftest import FIRST_MASK, frames_zip


def _merged_services(user_env: dict) -> dict:
    return compose_config("docker-compose.yml", "compose.cpu.yml", env=user_env)["services"]


def test_compose_commands_run_the_service(redis_url, prefix, small_model_dir, tmp_path):
    user_env = {"AGSS_MODEL": str(small_model_dir)}  # what a user's .env would set
    services = _merged_services(user_env)
    http_port, grpc_port = free_port(), free_port()
    # the compose secret: a keys file, registered by the API and gRPC servers at start
    key = f"agss_{uuid.uuid4().hex[:12]}_{uuid.uuid4().hex}"
    (tmp_path / "api_keys").write_text(f"# name key\nci {key}\n")
    procs = {}
    try:
        for name in ("api", "grpc", "worker"):
            svc = services[name]
            env = {**os.environ, **{k: str(v) for k, v in svc["environment"].items()}}
            # container -> loopback: the Redis service name becomes the test Redis, ports become free ones
            assert env["AGSS_REDIS_URL"] == "redis://redis:6379/0"
            assert env["AGSS_AUTH"] == "required" and env["AGSS_API_KEYS_FILE"] == "/run/secrets/api_keys"
            env.update(AGSS_REDIS_URL=redis_url, AGSS_KEY_PREFIX=prefix, AGSS_HTTP_HOST="127.0.0.1",
                       AGSS_LONG_SIDE="256", AGSS_API_KEYS_FILE=str(tmp_path / "api_keys"))
            if "AGSS_HTTP_PORT" in env:
                env["AGSS_HTTP_PORT"] = str(http_port)
            if "AGSS_GRPC_PORT" in env:
                env["AGSS_GRPC_PORT"] = str(grpc_port)
            exe, *args = svc["command"]
            assert exe == "agss-vos"
            log = open(tmp_path / f"{name}.log", "wb")
            procs[name] = (subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=env, stdout=log,
                                            stderr=subprocess.STDOUT), env)
        assert services["worker"]["environment"]["AGSS_DEVICE"] == "cpu"
        wait_ready(f"http://127.0.0.1:{http_port}/readyz",
                   {name: (p, tmp_path / f"{name}.log") for name, (p, _) in procs.items()}, timeout=60)
        # the image's HEALTHCHECK command answers healthy for every role
        for name, (_, env) in procs.items():
            hc = subprocess.run([sys.executable, "-m", "service.runtime.healthcheck"], env=env, capture_output=True,
                                text=True, timeout=30)
            assert hc.returncode == 0, f"{name}: {hc.stderr}"
        video = frames_zip(tmp_path / "v.zip", 4)
        assert httpx.get(f"http://127.0.0.1:{http_port}/v1/jobs/x").status_code == 401
        with Client(f"http://127.0.0.1:{http_port}", key=key) as c:
            job = c.submit(video, FIRST_MASK)
        with GrpcClient(f"127.0.0.1:{grpc_port}", key=key) as g:
            assert [f.index for f in g.frames(job.id)] == [0, 1, 2, 3]
            assert g.status(job.id).status == "succeeded"
    finally:
        for p, _ in procs.values():
            p.terminate()
        for p, _ in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_healthcheck_reports_a_dead_api(tmp_path):
    env = {**os.environ, "AGSS_ROLE": "api", "AGSS_HTTP_PORT": str(free_port())}
    hc = subprocess.run([sys.executable, "-m", "service.runtime.healthcheck"], env=env, capture_output=True,
                        text=True, timeout=30)
    assert hc.returncode == 1 and hc.stderr.startswith("unhealthy:")


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
