"""Every knob of the service, in one pydantic-settings class (environment prefix AGSS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGSS_", extra="ignore")

    # Redis
    redis_url: str | None = Field(None, description="Redis URL; unset: an embedded Redis is started (serve)")
    key_prefix: str = Field("agss:", description="prefix of every Redis key")
    data_dir: Path = Field(Path(".agss"), description="embedded Redis data folder (serve)")
    redis_max_connections: int = Field(4096, ge=8, description="Redis connections one API or gRPC process may "
                                                               "hold: every waiting stream and long-poll holds one "
                                                               "(redis-py's own default is 100); beyond, 503")

    # API
    http_host: str = Field("127.0.0.1", description="HTTP and gRPC bind address")
    http_port: int = Field(8000, description="HTTP port")
    grpc_port: int = Field(50051, description="gRPC port")
    max_upload_bytes: int = Field(512 << 20, description="largest accepted video upload")
    max_mask_bytes: int = Field(64 << 20, description="largest accepted masks upload")
    max_queued_jobs: int = Field(1000, description="submissions beyond this many queued jobs are refused")
    max_wait_seconds: float = Field(30.0, description="longest long-poll on /frames")
    keepalive_seconds: float = Field(75.0, description="how long the HTTP API keeps an idle connection open: longer "
                                                       "than a client or load balancer keeps it (uvicorn's 5 s "
                                                       "races clients that reuse a connection it is closing)")
    shutdown_seconds: float = Field(10.0, description="on SIGTERM, how long the HTTP API waits for open "
                                                      "connections (long-polls, WebSockets) before closing them")
    auth: Literal["off", "required"] = Field("off", description="required: every /v1 call needs an API key "
                                                                "(agss-vos keys create); off is allowed only when "
                                                                "every listener binds to loopback")
    api_keys_file: Path | None = Field(None, description="keys to register at start-up (a secret): one "
                                                         "`name key` per line")
    metrics_auth: bool = Field(False, description="/metrics needs an API key too (when auth is required)")
    storage: Literal["redis", "local"] = Field("redis", description="where uploaded inputs wait: redis (chunks) "
                                                                   "or local (a folder every process reads; the "
                                                                   "default of serve)")
    storage_dir: Path | None = Field(None, description="the folder of local storage (default: data_dir/inputs)")
    max_queued_input_bytes: int = Field(4 << 30, description="bytes of all queued inputs; submissions beyond it "
                                                             "get 429 (a bound on Redis memory with redis "
                                                             "storage)")
    upload_chunk_bytes: int = Field(1 << 20, description="chunk size of inputs stored in Redis")
    # Live sessions
    max_frame_bytes: int = Field(8 << 20, description="largest accepted frame of a live session (JPEG or PNG)")
    session_max_pending: int = Field(256, description="frames a session with policy all may have waiting; more "
                                                     "are refused (the default of a session's max_pending)")
    session_input_kept: int = Field(1024, description="input frames a session keeps in Redis for a worker that "
                                                     "takes it over (older ones are done or reported dropped)")
    session_idle_seconds: float = Field(60.0, description="a session ends after this long without input "
                                                          "(the default of its idle_timeout)")

    # Jobs
    lease_seconds: float = Field(30.0, description="a job whose worker is silent this long is taken over")
    max_attempts: int = Field(3, description="deliveries of a job before it is dead-lettered")
    result_ttl_seconds: int = Field(24 * 3600, description="how long results are kept after a job ends")
    input_ttl_seconds: int = Field(7 * 24 * 3600, description="how long unprocessed inputs are kept")

    # Workers
    workers: int = Field(1, description="worker processes started by serve")
    model: str = Field("agss-lite", description="model name, folder or official checkpoint")
    models_dir: Path | None = Field(None, description="a folder of more models, looked up by name before the "
                                                      "models shipped in the package")
    device: str = Field("cpu", description="cpu or cuda")
    backend: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="where the network runs: auto (the fastest installed for the device: OpenVINO, then "
                            "ONNX Runtime on a CPU; torch on a GPU), torch (eager), onnxruntime, openvino")
    flow: str = Field("dis", description="optical flow: dis, farneback or none")
    occlusions: bool = Field(True, description="pixels that an object uncovered as it moved do not inherit its "
                                               "mask (a second optical flow per frame, checked against the first)")
    long_side: int | None = Field(None, description="network input long side (default: the model's)")
    heartbeat_seconds: float = Field(5.0, description="worker heartbeat and lease renewal period")
    checkpoint_seconds: float = Field(5.0, description="a worker saves its tracker state to Redis after this many "
                                                       "seconds of work on a job (and when it hands a job back)")
    frame_delay_seconds: float = Field(0.0, description="pause after each published frame (for tests and demos "
                                                        "of a slow worker)")
    log_level: str = Field("INFO", description="log level")
    role: str = Field("api", description="what this container runs, for its health check: api, grpc, worker "
                                         "or serve")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def describe() -> str:
    """The settings as help text: env name, default, description."""
    lines = []
    for name, f in Settings.model_fields.items():
        lines.append(f"  AGSS_{name.upper():<22} {f.description} (default: {f.default})")
    return "\n".join(lines)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_auth(settings: Settings) -> None:
    """Refuses to serve without keys on anything but loopback (raises ValueError with the reason)."""
    host = settings.http_host
    if settings.auth == "off" and not (host in LOOPBACK or host.startswith("127.")):
        raise ValueError(f"AGSS_AUTH=off serves anyone who can reach {host}; bind to 127.0.0.1, or create keys "
                         "(agss-vos keys create) and set AGSS_AUTH=required")
