"""The service's metrics as a prometheus_client collector over one snapshot of the counters in Redis."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from ..jobs.records import JobStatus

STAGES = ("decode", "prompt", "flow", "network", "publish")


class ServiceCollector(Collector):
    """`snapshot` is JobStore.stats(): {"stats": counters hash, "pending", "workers", "worker_info"}."""

    def __init__(self, snapshot: dict):
        self.snapshot = snapshot

    def _num(self, key: str) -> float:
        return float(self.snapshot["stats"].get(key, 0) or 0)

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("agss_jobs", "Jobs by status (queued and running are current; ended states "
                                 "count since the data began).", labels=["status"])
        for s in JobStatus:
            jobs.add_metric([s.value], max(self._num("n:" + s.value), 0))
        yield jobs
        yield GaugeMetricFamily("agss_queue_length", "Jobs waiting for a worker.", max(self._num("n:queued"), 0))
        yield GaugeMetricFamily("agss_queue_pending", "Queue entries claimed by a worker and not yet acknowledged.",
                                self.snapshot["pending"])
        yield GaugeMetricFamily("agss_workers", "Workers with a live heartbeat.", self.snapshot["workers"])
        yield CounterMetricFamily("agss_jobs_submitted", "Jobs accepted.", self._num("submitted"))
        yield CounterMetricFamily("agss_frames", "Frames published; rate() of it is frames per second.",
                                  self._num("frames"))
        yield SummaryMetricFamily("agss_job_duration_seconds", "Run time of succeeded jobs (start to end).",
                                  count_value=self._num("job_seconds_count"), sum_value=self._num("job_seconds_sum"))
        stage = CounterMetricFamily("agss_stage_seconds", "Worker time per stage, summed over published frames.",
                                    labels=["stage"])
        for s in STAGES:
            stage.add_metric([s], self._num("stage:" + s))
        yield stage
        yield CounterMetricFamily("agss_stage_frames", "Frames counted in agss_stage_seconds_total.",
                                  self._num("stage_frames"))
        gpu = GaugeMetricFamily("agss_worker_gpu_memory_bytes", "GPU memory allocated by each worker (0 on CPU).",
                                labels=["worker", "device"])
        busy = GaugeMetricFamily("agss_worker_busy", "1 while the worker runs a job.", labels=["worker"])
        for w in self.snapshot.get("worker_info", []):
            gpu.add_metric([w.get("worker", ""), w.get("device", "")], w.get("gpu_memory_bytes", 0))
            busy.add_metric([w.get("worker", "")], 1 if w.get("job") else 0)
        yield gpu
        yield busy
