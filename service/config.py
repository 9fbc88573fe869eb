"""Every knob of the service, in one pydantic-settings class (environment prefix AGSS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGSS_", extra="ignore")

    # Redis
    redis_url: str | None = Field(None, description="Redis URL; unset: an embedded Redis is started (serve)")
    key_prefix: str = Field("agss:", description="prefix of every Redis key")
    data_dir: Path = Field(Path(".agss"), description="embedded Redis data folder (serve)")

    # API
    http_host: str = Field("127.0.0.1", description="HTTP bind address")
    http_port: int = Field(8000, description="HTTP port")
    grpc_port: int = Field(50051, description="gRPC port")
    max_upload_bytes: int = Field(512 << 20, description="largest accepted video upload")
    max_mask_bytes: int = Field(64 << 20, description="largest accepted masks upload")
    max_queued_jobs: int = Field(1000, description="submissions beyond this many queued jobs are refused")
    max_wait_seconds: float = Field(30.0, description="longest long-poll on /frames")
    upload_chunk_bytes: int = Field(1 << 20, description="chunk size of inputs stored in Redis")

    # Jobs
    lease_seconds: float = Field(30.0, description="a job whose worker is silent this long is taken over")
    max_attempts: int = Field(3, description="deliveries of a job before it is dead-lettered")
    result_ttl_seconds: int = Field(24 * 3600, description="how long results are kept after a job ends")
    input_ttl_seconds: int = Field(7 * 24 * 3600, description="how long unprocessed inputs are kept")

    # Workers
    workers: int = Field(1, description="worker processes started by serve")
    model: str = Field("agss-lite", description="model name, folder or official checkpoint")
    device: str = Field("cpu", description="cpu or cuda")
    flow: str = Field("dis", description="optical flow: dis, farneback or none")
    long_side: int | None = Field(None, description="network input long side (default: the model's)")
    heartbeat_seconds: float = Field(5.0, description="worker heartbeat and lease renewal period")
    log_level: str = Field("INFO", description="log level")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def describe() -> str:
    """The settings as help text: env name, default, description."""
    lines = []
    for name, f in Settings.model_fields.items():
        lines.append(f"  AGSS_{name.upper():<22} {f.description} (default: {f.default})")
    return "\n".join(lines)
