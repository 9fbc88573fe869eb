"""Shared fixtures: paths to ../shared, the official-format fixture checkpoint, small real models."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# Eager PyTorch for the processes the tests start: compiling the tiny test networks for OpenVINO would
# cost more than it saves. The backends themselves are tested in tests/unit/test_backends.py, and the
# installed package (tests/e2e/test_package.py) runs with the default.
os.environ.setdefault("AGSS_BACKEND", "torch")
# One OpenMP thread per process: the suite runs the test process, API, workers and Redis on 2 cores at
# once, and eager PyTorch's two-thread barriers wait for a time slice at every operator when the other
# core is busy (docs/BENCHMARKS.md): 8 % less wall time for the service and CLI tests. Results do not
# depend on it (a test and the processes it starts share the setting).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "official-agss"
REAL = SHARED / "data" / "real"
TRAIN240 = SHARED / "data" / "davis2016-train-240p"


def official_state_dict() -> dict[str, torch.Tensor]:
    """The fixture's deterministic weights (README 'The weights'), keys without `module.`."""
    keys = json.loads((FIXTURE / "state_dict_keys.json").read_text())
    sd = {}
    for i, e in enumerate(keys):
        key, shape = e["key"], tuple(e["shape"])
        rng = np.random.default_rng([20191027, i])
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if key.endswith("running_var"):
            a = 0.5 + rng.random(shape)
        elif key.endswith("running_mean"):
            a = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 4:
            a = rng.standard_normal(shape) * np.sqrt(2 / (shape[1] * shape[2] * shape[3]))
        elif key.endswith("weight"):
            a = 0.3 + 0.05 * rng.standard_normal(shape)
        else:
            a = 0.1 * rng.standard_normal(shape)
        sd[key] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return sd


@pytest.fixture(scope="session")
def official_ckpt(tmp_path_factory) -> Path:
    """An official-format checkpoint file: {'seg': {'module.' + key: tensor}} (DataParallel)."""
    path = tmp_path_factory.mktemp("official") / "model_fixture.pth"
    torch.save({"seg": {"module." + k: v for k, v in official_state_dict().items()}}, path)
    return path


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A small random network (resnet18, width 32) in our folder format."""
    from service.vos import AGSSConfig, build_model, save_model

    torch.manual_seed(0)
    model = build_model(AGSSConfig("resnet18", 32, 128))
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny", provenance={"source": "tests"})


def copy_frames(seq: Path, out: Path, n: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted((seq / "JPEGImages").iterdir())[:n]:
        shutil.copy(f, out / f.name)
    return out


def wait_ready(url: str, procs: dict, timeout: float = 90) -> None:
    """Until GET `url` answers 200; fails with the end of its log if a process {name: (proc, log path)}
    exits meanwhile, or when `timeout` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        for name, (proc, log) in procs.items():
            assert proc.poll() is None, f"{name} exited: {Path(log).read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout} s"
        time.sleep(0.2)


def require(path: Path) -> Path:
    """The path, or a skip where ../shared is not at hand; a failure in CI (AGSS_REQUIRE_SHARED=1, set by
    .ci/run), where a missing ../shared would otherwise skip a quarter of the suite without a word."""
    if not path.exists():
        if os.environ.get("AGSS_REQUIRE_SHARED") == "1":
            pytest.fail(f"{path} is missing: CI needs ../shared (AGSS_REQUIRE_SHARED=1)", pytrace=False)
        pytest.skip(f"{path} is not available")
    return path
