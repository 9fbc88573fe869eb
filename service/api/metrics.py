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
    return "\n".join(lines) + "\n"
