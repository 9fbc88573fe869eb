"""Prometheus text exposition of the service's counters, read from Redis (shared by all processes)."""

from __future__ import annotations

from ..jobs.model import STATUSES


def render_metrics(snapshot: dict) -> str:
    st = snapshot["stats"]

    def num(key: str) -> float:
        return float(st.get(key, 0) or 0)

    lines = [
        "# HELP agss_jobs Jobs by status (queued and running are current; ended states count since the data began).",
        "# TYPE agss_jobs gauge",
    ]
    lines += [f'agss_jobs{{status="{s}"}} {max(num("n:" + s), 0):g}' for s in STATUSES]
    lines += [
        "# HELP agss_queue_length Jobs waiting for a worker.",
        "# TYPE agss_queue_length gauge",
        f"agss_queue_length {max(num('n:queued'), 0):g}",
        "# HELP agss_queue_pending Queue entries claimed by a worker and not yet acknowledged.",
        "# TYPE agss_queue_pending gauge",
        f"agss_queue_pending {snapshot['pending']}",
        "# HELP agss_workers Workers with a live heartbeat.",
        "# TYPE agss_workers gauge",
        f"agss_workers {snapshot['workers']}",
        "# HELP agss_jobs_submitted_total Jobs accepted.",
        "# TYPE agss_jobs_submitted_total counter",
        f"agss_jobs_submitted_total {num('submitted'):g}",
        "# HELP agss_frames_total Frames published; rate() of it is frames per second.",
        "# TYPE agss_frames_total counter",
        f"agss_frames_total {num('frames'):g}",
        "# HELP agss_job_duration_seconds Run time of succeeded jobs (start to end).",
        "# TYPE agss_job_duration_seconds summary",
        f"agss_job_duration_seconds_sum {num('job_seconds_sum'):g}",
        f"agss_job_duration_seconds_count {num('job_seconds_count'):g}",
    ]
    lines += [
        "# HELP agss_stage_seconds_total Worker time per stage, summed over published frames.",
        "# TYPE agss_stage_seconds_total counter",
    ]
    lines += [f'agss_stage_seconds_total{{stage="{s}"}} {num("stage:" + s):g}'
              for s in ("decode", "flow", "network", "publish")]
    lines += [
        "# HELP agss_stage_frames_total Frames counted in agss_stage_seconds_total.",
        "# TYPE agss_stage_frames_total counter",
        f"agss_stage_frames_total {num('stage_frames'):g}",
        "# HELP agss_worker_gpu_memory_bytes GPU memory allocated by each worker (0 on CPU).",
        "# TYPE agss_worker_gpu_memory_bytes gauge",
    ]
    for w in snapshot.get("worker_info", []):
        labels = f'worker="{w.get("worker", "")}",device="{w.get("device", "")}"'
        lines.append(f"agss_worker_gpu_memory_bytes{{{labels}}} {w.get('gpu_memory_bytes', 0)}")
    lines += ["# HELP agss_worker_busy 1 while the worker runs a job.", "# TYPE agss_worker_busy gauge"]
    for w in snapshot.get("worker_info", []):
        lines.append(f'agss_worker_busy{{worker="{w.get("worker", "")}"}} {1 if w.get("job") else 0}')
    return "\n".join(lines) + "\n"
