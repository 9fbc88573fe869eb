"""Every Redis key name and every TTL of the service, in one place.

    {p}queue                 stream: one entry {job: id} per job to run; consumer group "workers"
    {p}job:{id}              hash: the job record (see jobs/records.py)
    {p}job:{id}:frames       stream: frame i has entry id 0-(i+1); an end marker has id 1-0
    {p}job:{id}:video        list: the uploaded video, in chunks, until the job ends
    {p}job:{id}:masks        string: the uploaded masks or prompts file, until the job ends
    {p}job:{id}:prompts      stream: prompts added while the job runs {frame, prompts (JSON)}, until it ends
    {p}job:{id}:checkpoint   hash: the tracker state after `frame` frames {frame, state, pos, worker, at}
    {p}job:{id}:input        stream: a live session's input {index, data, t} per frame, {end} at the end
    {p}idem:{key}            string: job id of an Idempotency-Key
    {p}worker:{wid}          string: worker heartbeat (expires when the worker stops beating)
    {p}deadletter            stream: jobs that used up their attempts
    {p}stats                 hash: counters (jobs per status, frames, job seconds, bytes of queued inputs)
    {p}apikey:{kid}          hash: an API key's record {name, digest (SHA-256 of its secret), quotas}
    {p}apikeys               hash: key name -> key id
    {p}owner:{kid}           hash: a key's queued and running jobs, its rate bucket
    {p}owner:{kid}:parked    list: its jobs waiting for one of its running slots (max_running)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

GROUP = "workers"
END_ID = "1-0"  # the end marker sorts after every frame id 0-N, and nothing can be added after it


def frame_id(index: int) -> str:
    """Stream entry id of frame `index` (0-based): explicit ids make a second publish impossible."""
    return f"0-{index + 1}"


def frame_index(entry_id: str | bytes) -> int:
    s = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, seq = s.split("-")
    return -1 if ms != "0" else int(seq) - 1


@dataclass(frozen=True)
class Keys:
    prefix: str = "agss:"

    @property
    def queue(self) -> str:
        return f"{self.prefix}queue"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def frames(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:frames"

    def video(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:video"

    def masks(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:masks"

    def prompts(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:prompts"

    def checkpoint(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:checkpoint"

    def input(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:input"

    def apikey(self, key_id: str) -> str:
        return f"{self.prefix}apikey:{key_id}"

    @property
    def apikey_names(self) -> str:
        return f"{self.prefix}apikeys"

    def owner(self, key_id: str) -> str:
        return f"{self.prefix}owner:{key_id}"

    def parked(self, key_id: str) -> str:
        return f"{self.prefix}owner:{key_id}:parked"

    def idem(self, key: str) -> str:
        return f"{self.prefix}idem:{hashlib.sha256(key.encode()).hexdigest()}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}worker:*"
