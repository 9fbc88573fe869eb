"""tools/gpu_session.py's replicas: weights averaged over a real gloo group on loopback, one start for all, and
the deadline decided together so that no replica waits at a sum the others never reach."""

from __future__ import annotations

import importlib.util
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_session.py"


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_session", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _replica(rank: int, port: int, late_rank: int, out) -> None:
    """One replica: a Linear drawn with its own seed, stepped by +rank+1 between averages."""
    import torch.distributed as dist

    gs = _tool()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(rank)
    model = torch.nn.Linear(3, 2)
    hook = gs._Replicas(2, every=2, deadline=0.0 if rank == late_rank else math.inf, last=6)
    events = []
    try:
        for it in range(1, 7):
            if it == 1:
                hook(it, model)
                events.append(("start", model.weight.detach().clone()))
                continue
            with torch.no_grad():
                model.weight.add_(rank + 1)
            hook(it, model)
            events.append((it, model.weight.detach().clone()))
    except gs._Stop as stop:
        events.append(("stop", stop.args[0]))
    # Numpy copies, not tensors: a tensor crosses a torch queue as a file descriptor that the receiver fetches
    # from this process, which may have exited by then (FileNotFoundError on the listener socket in CI).
    events = [(k, v.numpy().copy() if isinstance(v, torch.Tensor) else v) for k, v in events]
    weights = None if hook.weights is None else hook.weights["weight"].numpy().copy()
    out.put((rank, events, weights))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensor(value):
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def _run(late_rank: int) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_replica, args=(r, port, late_rank, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = [out.get(timeout=120) for _ in procs]
        results = {r: ([(k, _tensor(v)) for k, v in ev], _tensor(w)) for r, ev, w in got}
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    return results


def test_replicas_start_together_and_average_every_few_steps():
    res = _run(late_rank=-1)
    (ev0, w0), (ev1, w1) = res[0], res[1]
    start = ev0[0][1]
    assert torch.equal(ev1[0][1], start)  # rank 1 took rank 0's weights at the first step
    torch.manual_seed(0)
    assert torch.equal(start, torch.nn.Linear(3, 2).weight)
    after = dict(ev0[1:])
    # step 2: +1 and +2 averaged -> +1.5 on both; step 3 is not an average, so each keeps its own step
    assert torch.allclose(after[2], start + 1.5)
    assert torch.allclose(dict(ev1[1:])[2], start + 1.5)
    assert torch.allclose(after[3], start + 2.5)
    assert torch.allclose(dict(ev1[1:])[3], start + 3.5)
    # 6 is the last step, averaged: 1.5 per step for 5 steps; both hand back the same final weights
    assert torch.allclose(after[6], start + 7.5)
    assert torch.equal(w0, w1) and torch.allclose(w0, start + 7.5)


@pytest.mark.parametrize("late_rank", [0, 1])
def test_one_replica_past_the_deadline_stops_both_at_the_same_average(late_rank):
    res = _run(late_rank)
    for rank in (0, 1):
        ev, w = res[rank]
        assert ev[-1] == ("stop", 2)  # not at step 1, which is no average: both stop at the first one
        assert len(ev) == 2  # the start, then the stop
        assert w is not None
    assert torch.equal(res[0][1], res[1][1])  # the averaged weights, the same on both
    assert torch.allclose(res[0][1], res[0][0][0][1] + 1.5)


def test_one_process_stops_at_the_first_step_past_the_deadline_with_its_weights():
    gs = _tool()
    model = torch.nn.Linear(3, 2)
    gs._Replicas(1, every=2, deadline=math.inf, last=5)(1, model)  # in time: nothing happens
    hook = gs._Replicas(1, every=2, deadline=0.0, last=5)
    with pytest.raises(gs._Stop) as stop:
        hook(3, model)
    assert stop.value.args == (3,)
    assert torch.equal(hook.weights["weight"], model.weight)
    done = gs._Replicas(1, every=2, deadline=math.inf, last=5)
    done(5, model)  # the last step keeps the weights without stopping
    assert torch.equal(done.weights["bias"], model.bias)
