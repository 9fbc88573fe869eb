"""The worker side of the queue (service/jobs/queue.py) and the typed script wrappers (service/jobs/scripts.py)
in-process against a real Redis, for what tests/integration/test_scripts.py does not look at: what each
call stores (compact JSON, the fields of a dead letter, a checkpoint's input position), the live
session's input stream as the worker reads it, heartbeats, and the outcomes' text."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis

from service.config import Settings
from service.jobs import intake, scripts
from service.jobs.errors import JobConflictError, JobNotFoundError
from service.jobs.keys import GROUP, Keys, frame_index
from service.jobs.queue import Claim, WorkerQueue
from service.jobs.records import Job, JobStatus, now, text
from service.jobs.scripts import Outcome

from .conftest import store_call


@pytest.fixture
def env(redis_url, prefix, tmp_path):
    settings = Settings(redis_url=redis_url, key_prefix=prefix, max_queued_jobs=10, lease_seconds=30,
                        result_ttl_seconds=600, input_ttl_seconds=900, heartbeat_seconds=5, data_dir=tmp_path)
    video = tmp_path / "v.zip"
    video.write_bytes(b"x" * 3000)
    (tmp_path / "m.png").write_bytes(b"masks")
    r = redis.from_url(redis_url)
    yield settings, video, r, Keys(prefix)
    r.close()


def _submit(settings: Settings, video, **kw) -> Job:
    job = Job(id=uuid.uuid4().hex, frames_total=5, objects=[1], width=4, height=4, created_at=now(),
              video_name="clip.ZIP", masks_name="first.PNG", **kw)
    return store_call(settings, lambda s: s.submit(job, video, video.with_name("m.png")))


def _queue(settings: Settings, name: str, **over) -> WorkerQueue:
    q = WorkerQueue(settings.model_copy(update=over) if over else settings, name)
    q.ensure_group()
    return q


def _running(settings, video, q: WorkerQueue) -> tuple[Job, Claim]:
    job = _submit(settings, video)
    claim = q.claim(block_ms=100)
    assert claim.job_id == job.id and q.start(claim).ok
    return job, claim


# -- outcomes --------------------------------------------------------------------------------------------------
def test_outcomes_read_every_reply_form():
    assert scripts.parse(b"ok") == Outcome("ok") and scripts.parse("ok").ok
    assert scripts.parse(b"lost") == Outcome("lost") and not scripts.parse(b"lost").ok
    assert scripts.parse(b"status:running") == Outcome("ok", JobStatus.RUNNING)
    assert scripts.parse("state:cancelled") == Outcome("state", JobStatus.CANCELLED, "cancelled")
    assert scripts.parse("state:closing") == Outcome("state", None, "closing")  # a session's, not a status
    assert scripts.parse(b"order:12") == Outcome("order", value="12")
    assert scripts.parse(b"exhausted:4") == Outcome("exhausted", value="4")
    assert scripts.parse([b"full", b"7"]) == Outcome("full", value="7")
    assert scripts.parse(["ok", 3]) == Outcome("ok", value="3") and scripts.parse(["ok", 3]).ok
    assert scripts.parse(b"a:b:c") == Outcome("a", value="b:c")


def test_outcomes_as_text():
    assert str(Outcome("ok")) == "ok"
    assert str(Outcome("state", JobStatus.CANCELLED, "cancelled")) == "state:cancelled"
    assert str(Outcome("ok", JobStatus.RUNNING)) == "ok:running"
    assert str(Outcome("order", value="3")) == "order:3"
    assert str(Outcome("state", None, "closing")) == "state:closing"
    assert str(Outcome("lost", None, "")) == "lost"


def test_the_wrappers_pass_what_the_scripts_read():
    k = Keys("p:")
    call = scripts.finish(k, job_id="j", to=JobStatus.FAILED, at=5.0, result_ttl=60, message="m" * 1500)
    assert call.keys == ["p:job:j", "p:stats", "p:job:j:frames", "p:job:j:video", "p:job:j:masks", "p:queue",
                         "p:job:j:prompts", "p:job:j:checkpoint", "p:job:j:input"]
    assert call.args == ["queued,running", "failed", 5.0, 60, "", "", GROUP, "", "m" * 1000, "", "", "p:"]
    assert scripts.finish(k, job_id="j", to=JobStatus.SUCCEEDED, at=1, result_ttl=2, frames_total=0,
                          allowed=(JobStatus.RUNNING,)).args[0:2] == ["running", "succeeded"]
    plain = scripts.finish(k, job_id="j", to=JobStatus.SUCCEEDED, at=1, result_ttl=2, frames_total=0)
    assert plain.args[9] == 0 and plain.args[4:9] == ["", "", GROUP, "", ""] and plain.args[10] == ""
    pub = scripts.publish(k, job_id="j", msg_id="1-1", worker="w", index=3, objects="[]", events="[]", meta="{}",
                          at=2.0)
    assert pub.keys == ["p:queue", "p:job:j", "p:job:j:frames", "p:stats"]
    assert pub.args == [GROUP, "1-1", "w", 3, "[]", "[]", "{}", 2.0, 0]
    assert scripts.publish(k, job_id="j", msg_id="1-1", worker="w", index=3, objects="[]", events="[]", meta="{}",
                           at=2.0, dropped=True, stages={"a": 1.5, "b": 2.0}).args[8:] == [1, "a", 1.5, "b", 2.0]
    cp = scripts.save_checkpoint(k, job_id="j", msg_id="1-1", worker="w", frame=2, state=b"s", at=3.0, ttl=9)
    assert cp.args == [GROUP, "1-1", "w", 2, b"s", 3.0, 9, ""] and cp.keys == ["p:queue", "p:job:j",
                                                                               "p:job:j:checkpoint"]
    ap = scripts.add_prompts(k, job_id="j", frames={4: "{}", 2: '{"1":{}}'}, new_ids=[9, 3], ttl=7)
    assert ap.keys == ["p:job:j", "p:job:j:prompts"] and ap.args == ["[3,9]", 7, 2, '{"1":{}}', 4, "{}"]
    assert scripts.add_prompts(k, job_id="j", frames={1: "{}"}, new_ids=[], ttl=7).args[0] == "[]"
    push = scripts.session_push(k, session_id="s", data=b"d", at=1.0, max_pending=2, max_kept=3, ttl=4)
    assert push.keys == ["p:job:s", "p:job:s:input"] and push.args == [b"d", 1.0, 2, 3, 4]
    end = scripts.session_end(k, session_id="s", at=8.0)
    assert (end.script, end.keys, end.args) == ("session_end", ["p:job:s", "p:job:s:input"], [8.0])
    sub = scripts.submit(k, job_id="j", record={"id": "j", "status": "queued"}, max_queued=3, idem_key=None,
                         idem_ttl=10)
    assert sub.keys == ["p:job:j", "p:stats", "p:queue", ""]
    assert sub.args == ["j", 3, 10, "p:", "", 0, 0.0, 0.0, 0, 0, "id", "j", "status", "queued"]
    assert scripts.submit(k, job_id="j", record={}, max_queued=3, idem_key="abc", idem_ttl=10).keys[3] == k.idem("abc")


# -- what the worker side stores -------------------------------------------------------------------------------
def test_frames_are_stored_as_compact_json(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    events = [{"type": "started", "id": 1}]
    assert q.publish(claim, 0, [{"id": 1, "area": 2}], events=events, meta={"error": {"code": "x"}}).ok
    assert q.publish(claim, 1, [], events=None).ok
    (_, first), (_, second) = r.xrange(k.frames(job.id))
    assert first[b"objects"] == b'[{"id":1,"area":2}]' and first[b"events"] == b'[{"type":"started","id":1}]'
    assert first[b"meta"] == b'{"error":{"code":"x"}}' and float(first[b"t"]) > 0
    assert second[b"events"] == b"[]" and second[b"meta"] == b"{}"
    assert q.unanswered(job.id, 0, 2) == {0}  # frame 0 carries an error mark


def test_a_finished_job_has_its_codes_and_none_of_its_inputs(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    assert r.exists(k.masks(job.id)) and r.exists(k.video(job.id))
    assert q.finish(claim, JobStatus.FAILED, "bad_input", "é" * 1500, frames_total=3, ended_by="client").ok
    done = q.get(job.id)
    assert (done.status, done.error_code, done.error_message) == (JobStatus.FAILED, "bad_input", "é" * 1000)
    assert done.frames_total == 3 and done.ended_by == "client" and done.finished_at >= done.started_at > 0
    assert not r.exists(k.masks(job.id)) and not r.exists(k.video(job.id))
    plain = _submit(settings, video)
    c2 = q.claim(block_ms=100)
    assert q.start(c2).ok and q.finish(c2, JobStatus.SUCCEEDED).ok
    again = q.get(plain.id)
    assert (again.error_code, again.error_message, again.ended_by, again.frames_total) == ("", "", "", 5)


def test_finish_checks_the_owner_unless_told_not_to(env):
    settings, video, r, k = env
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2", lease_seconds=0)
    job, claim = _running(settings, video, w1)
    taken = w2.claim(block_ms=100)
    assert w1.finish(claim, JobStatus.FAILED, "x", "y").kind == "lost"
    assert w1.finish(claim, JobStatus.FAILED, "x", "y", check_owner=False).ok  # the entry is w2's: ended anyway
    assert w1.get(job.id).status == JobStatus.FAILED and taken.msg_id == claim.msg_id


def test_a_dead_letter_says_which_job_why_and_who(env):
    settings, video, r, k = env
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2", lease_seconds=0)
    job, claim = _running(settings, video, w1)
    w2.claim(block_ms=100)  # the job is not w1's any more: the dead letter ends it all the same
    out = w1.dead_letter(claim, "gave up")
    assert out.ok
    (eid, entry), = r.xrange(k.deadletter)
    assert entry[b"job"] == job.id.encode() and entry[b"reason"] == b"gave up" and entry[b"worker"] == b"w1"
    assert entry[b"deliveries"] == b"1" and float(entry[b"at"]) > 0
    failed = w1.get(job.id)
    assert (failed.status, failed.error_code, failed.error_message) == (JobStatus.FAILED, "attempts_exhausted",
                                                                        "gave up")


def test_the_dead_letter_stream_is_bounded(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    r.xadd(k.deadletter, {"job": "old"})
    pipe = r.pipeline(transaction=False)
    for i in range(10_300):  # more than a full stream
        pipe.xadd(k.deadletter, {"job": f"j{i}"})
    pipe.execute()
    job, claim = _running(settings, video, q)
    q.dead_letter(claim, "r")
    length = r.xlen(k.deadletter)
    assert 10_000 <= length <= 10_100  # trimmed to its bound (by whole stream nodes of 100), the newest kept
    assert r.xrevrange(k.deadletter, count=1)[0][1][b"job"] == job.id.encode()
    assert r.xrange(k.deadletter, count=1)[0][1][b"job"] != b"old"


def test_a_checkpoint_keeps_the_input_position(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    assert q.publish(claim, 0, []).ok
    assert q.save_checkpoint(claim, 1, b"state", pos="12-3").ok
    assert q.load_checkpoint(job.id) == (1, b"state", "12-3")
    assert 0 < r.ttl(k.checkpoint(job.id)) <= 900  # the input TTL
    assert q.save_checkpoint(claim, 1, b"other").ok and q.load_checkpoint(job.id) == (1, b"other", "")
    r.hdel(k.checkpoint(job.id), "state")
    assert q.load_checkpoint(job.id) is None  # half a checkpoint is none
    r.hset(k.checkpoint(job.id), mapping={"state": b"s"})
    r.hdel(k.checkpoint(job.id), "frame")
    assert q.load_checkpoint(job.id) is None


def test_prompts_since_reads_each_entry_once(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job = _submit(settings, video)
    assert q.prompts_since(job.id) == ("0-0", [])
    store_call(settings, lambda s: s.add_prompts(job.id, {1: '{"1":{"remove":true}}', 3: '{"2":{}}'}, [2]))
    last, got = q.prompts_since(job.id)
    assert got == [(1, '{"1":{"remove":true}}'), (3, '{"2":{}}')] and last != "0-0"
    assert q.prompts_since(job.id, last) == (last, [])
    store_call(settings, lambda s: s.add_prompts(job.id, {4: "{}"}, []))
    last2, got2 = q.prompts_since(job.id, last)
    assert got2 == [(4, "{}")] and last2 > last


def test_inputs_are_fetched_from_redis_or_read_in_place(env, tmp_path):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job = _submit(settings, video)
    got = q.download_inputs(job.id, tmp_path, job.video_name, job.masks_name)
    assert got == (tmp_path / "video.zip", tmp_path / "masks.png")
    assert got[0].read_bytes() == video.read_bytes() and got[1].read_bytes() == b"masks"
    q.delete_inputs(job.id)  # Redis inputs go with the finish script, not here
    assert r.exists(k.video(job.id))
    with pytest.raises(JobConflictError):
        q.download_inputs("nope", tmp_path, "v.zip", "m.png")
    local = settings.model_copy(update={"storage": "local", "storage_dir": tmp_path / "store"})
    lq = _queue(local, "w2")
    ljob = _submit(local, video)
    lv, lm = lq.download_inputs(ljob.id, tmp_path / "unused", "v.zip", "m.png")
    assert lv.parent == tmp_path / "store" / ljob.id and lv.read_bytes() == video.read_bytes()
    lq.delete_inputs(ljob.id)
    assert not (tmp_path / "store" / ljob.id).exists()


def test_get_and_alive(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job = _submit(settings, video)
    got = q.get(job.id)
    assert got.id == job.id and got.video_name == "clip.ZIP" and got.status == JobStatus.QUEUED
    with pytest.raises(JobNotFoundError, match="^nope$"):
        q.get("nope")
    assert q.alive(job.id) and not q.alive("nope")
    store_call(settings, lambda s: s.cancel(job.id))
    assert not q.alive(job.id)


def test_heartbeat_and_leave(env):
    settings, video, r, k = env
    q = _queue(settings.model_copy(update={"heartbeat_seconds": 2.5}), "w-beat")
    q.heartbeat({"worker": "w-beat", "jobs_done": 3})
    assert json.loads(r.get(k.worker("w-beat"))) == {"worker": "w-beat", "jobs_done": 3}
    assert 6 <= r.ttl(k.worker("w-beat")) <= 7  # three periods
    short = _queue(settings.model_copy(update={"heartbeat_seconds": 0.1}), "w-short")
    short.heartbeat({})
    assert r.ttl(k.worker("w-short")) == 2  # never under two seconds
    assert store_call(settings, lambda s: s.workers_alive()) == 2
    q.leave()
    assert not r.exists(k.worker("w-beat")) and r.exists(k.worker("w-short"))


def test_a_default_worker_id_names_the_host_and_process(env):
    settings, *_ = env
    import os
    import socket

    a, b = WorkerQueue(settings), WorkerQueue(settings)
    assert a.worker_id.startswith(f"{socket.gethostname()}-{os.getpid()}-") and a.worker_id != b.worker_id
    assert len(a.worker_id.rsplit("-", 1)[1]) == 6


def test_ensure_group_is_idempotent_and_reports_other_errors(env):
    settings, video, r, k = env
    q = WorkerQueue(settings, "w1")
    q.ensure_group()
    q.ensure_group()
    assert [g["name"] for g in r.xinfo_groups(k.queue)] == [GROUP.encode()]
    r.delete(k.queue)
    r.set(k.queue, "not a stream")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        q.ensure_group()


def test_a_claim_of_a_deleted_entry_is_acked_and_skipped(env):
    """Redis 7 drops an entry deleted while pending from XAUTOCLAIM's answer; Redis 6.2 (the embedded one of
    `serve` and of the tests) answers it as (None, None), and claim() then acks the id "None": Redis refuses
    that, the worker loop took it for an outage, and every later claim met the same entry first, so the
    queue stalled (docs/TESTING.md, "Bugs found"; fixed)."""
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job = _submit(settings, video)
    (eid, _), = r.xrange(k.queue)
    first = q.claim(block_ms=100)
    assert first.job_id == job.id and first.deliveries == 1 and first.msg_id == eid.decode()
    r.xdel(k.queue, first.msg_id)  # its entry is gone while it is pending
    other = _queue(settings, "w2", lease_seconds=0)
    assert other.claim(block_ms=100) is None
    assert r.xpending(k.queue, GROUP)["pending"] == 0
    assert other.claim(block_ms=50) is None  # nothing queued


def test_only_the_deleted_pending_entry_is_acked(env):
    """The deleted entry is acked and skipped; this worker's other pending entry (a job it runs) stays its
    own, and a job queued behind the deleted one is claimed next, on Redis 6.2 and 7 alike."""
    settings, video, r, k = env
    gone, running, queued = (_submit(settings, video) for _ in range(3))
    first = _queue(settings, "w1").claim(block_ms=100)
    mine = _queue(settings, "w2").claim(block_ms=100)  # w2 runs the second job
    assert (first.job_id, mine.job_id) == (gone.id, running.id)
    r.xdel(k.queue, first.msg_id)
    # w2 again, now taking over w1's silent entry at once: 6.2 answers the deleted entry (acked, None), 7
    # leaves it out and w2 reads the next queued one
    c1 = _queue(settings, "w2", lease_seconds=0).claim(block_ms=100)
    c2 = _queue(settings, "w2").claim(block_ms=100)
    pending = {text(p["message_id"]): text(p["consumer"])
               for p in r.xpending_range(k.queue, GROUP, "-", "+", 10)}
    assert first.msg_id not in pending  # acked, whoever held it
    assert pending.get(mine.msg_id) == "w2"  # still w2's (Redis 7 may hand it to w2 again: lease 0)
    assert queued.id in {c.job_id for c in (c1, c2) if c is not None}  # the queue goes on


def test_a_claim_takes_one_silent_entry_at_a_time(env):
    """Another worker's silent jobs are taken over one per claim: the rest stay where they are, for the
    next claim (of this worker or another)."""
    settings, video, r, k = env
    w1 = _queue(settings, "w1")
    a, b = _submit(settings, video), _submit(settings, video)
    assert {w1.claim(block_ms=100).job_id, w1.claim(block_ms=100).job_id} == {a.id, b.id}
    taken = _queue(settings, "w2", lease_seconds=0).claim(block_ms=100)
    owners = [text(p["consumer"]) for p in r.xpending_range(k.queue, GROUP, "-", "+", 10)]
    assert taken.job_id == a.id and taken.deliveries == 2 and sorted(owners) == ["w1", "w2"]


def test_a_claim_waits_for_a_job_to_arrive(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    got: list = []
    t = threading.Thread(target=lambda: got.append(q.claim(block_ms=20_000)))
    t.start()
    time.sleep(0.3)
    job = _submit(settings, video)
    t.join(20)
    assert not t.is_alive() and got[0] is not None and got[0].job_id == job.id


def test_a_session_input_as_the_worker_reads_it(env):
    settings, video, r, k = env
    session = store_call(settings, lambda s: s.create_session(intake.new_session(settings, intake.SessionOptions())))
    for data in (b"\xff\xd8\xffA", b"\xff\xd8\xffB", b"\xff\xd8\xffC"):
        store_call(settings, lambda s, d=data: s.push_frame(session.id, d, 8))
    q = _queue(settings, "w1")
    entries = q.read_input(session.id, "0-0", block_ms=100)
    assert [e[1]["index"] for e in entries] == [b"0", b"1", b"2"] and entries[1][1]["data"] == b"\xff\xd8\xffB"
    assert all(isinstance(eid, str) and float(e["t"]) > 0 for eid, e in entries)
    assert q.read_input(session.id, entries[0][0], block_ms=100, count=1) == [entries[1]]
    assert q.read_input(session.id, entries[2][0], block_ms=10) == []  # nothing new (waited 10 ms)
    q.trim_input(session.id, "")  # no position: nothing to trim
    assert r.xlen(k.input(session.id)) == 3
    q.mark(session.id, current=2, width=64, height=48)
    got = q.get(session.id)
    assert (got.width, got.height, int(r.hget(k.job(session.id), "current"))) == (64, 48, 2)
    ended = store_call(settings, lambda s: s.end_session(session.id))
    assert ended.closing == 1
    last = q.read_input(session.id, entries[2][0], block_ms=100)
    assert len(last) == 1 and "end" in last[0][1]
    assert store_call(settings, lambda s: s.end_session(session.id)).closing == 1  # once
    assert r.xlen(k.input(session.id)) == 4
    with pytest.raises(JobNotFoundError):
        store_call(settings, lambda s: s.end_session("nope"))


def test_reading_a_session_input_waits_for_the_next_frame(env):
    import threading
    import time

    settings, video, r, k = env
    session = store_call(settings, lambda s: s.create_session(intake.new_session(settings, intake.SessionOptions())))
    q = _queue(settings, "w1")

    def later():
        time.sleep(0.2)
        r.xadd(k.input(session.id), {"index": 0, "data": b"late"})

    t = threading.Thread(target=later)
    t.start()
    got = q.read_input(session.id, "0-0", block_ms=10_000)  # blocks until the frame comes (not 10 s)
    t.join()
    assert [e[1]["data"] for e in got] == [b"late"]


def test_a_read_of_many_input_entries_returns_up_to_count_and_trimming_keeps_the_position_on(env):
    settings, video, r, k = env
    session = store_call(settings, lambda s: s.create_session(intake.new_session(settings, intake.SessionOptions())))
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd(k.input(session.id), {"index": i, "data": b"x"})
    pipe.execute()
    q = _queue(settings, "w1")
    entries = q.read_input(session.id, "0-0", block_ms=10)
    assert len(entries) == 256 and entries[-1][1]["index"] == b"255"
    q.trim_input(session.id, entries[250][0])  # trimmed by whole stream nodes (100 entries): lazily
    left = r.xrange(k.input(session.id))
    assert 50 <= len(left) <= 150 and int(left[0][1][b"index"]) <= 250 and left[-1][1][b"index"] == b"299"


def test_unanswered_frames_are_the_dropped_and_failed_ones_in_range(env):
    settings, video, r, k = env
    session = store_call(settings, lambda s: s.create_session(intake.new_session(settings, intake.SessionOptions())))
    q = _queue(settings, "w1")
    claim = q.claim(block_ms=100)
    assert q.start(claim).ok
    marks = [{}, {"dropped": True}, {"error": {"code": "bad_input"}}, {"dropped": False}, {"dropped": True}]
    for i, m in enumerate(marks):
        assert q.publish(claim, i, [], meta=m, dropped=bool(m.get("dropped"))).ok
    r.xadd(k.frames(session.id), {"objects": "[]"}, id="0-6")  # an entry without meta (an older worker's)
    assert q.unanswered(session.id, 0, 6) == {1, 2, 4}
    assert q.unanswered(session.id, 2, 4) == {2} and q.unanswered(session.id, 4, 5) == {4}
    assert q.unanswered(session.id, 3, 3) == set() and q.unanswered(session.id, 4, 2) == set()
    assert [frame_index(e[0]) for e in r.xrange(k.frames(session.id))] == [0, 1, 2, 3, 4, 5]
    assert int(r.hget(k.job(session.id), "frames_dropped")) == 2


def test_accept_checks_and_queues_an_upload_once_per_idempotency_key(env, tmp_path, caplog):
    import logging
    import zipfile

    import cv2
    import numpy as np

    from service.jobs import apikeys
    from service.media import encode_label_png

    settings, _, r, k = env
    video = tmp_path / "up.zip"
    with zipfile.ZipFile(video, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i:05d}.jpg", cv2.imencode(".jpg", np.full((24, 32, 3), 50 * i, np.uint8))[1].tobytes())
    masks = tmp_path / "m.png"
    lab = np.zeros((24, 32), np.uint8)
    lab[3:9, 4:12] = 5
    masks.write_bytes(encode_label_png(lab))
    key = apikeys.create(r, k, "tenant")

    async def go(store):
        caller = await apikeys.verify(store.r, k, key)
        a = await intake.accept(store, video, "dir/clip.zip", masks, "m.png", {"flow": "none"}, "once", caller)
        b = await intake.accept(store, video, "dir/clip.zip", masks, "m.png", {"flow": "none"}, "once", caller)
        c = await intake.accept(store, video, "other.zip", masks, "n.png", {}, None)
        return caller, a, b, c

    caplog.set_level(logging.INFO, logger="agss.intake")
    caller, a, b, c = store_call(settings, go)
    assert a.id == b.id != c.id and a.owner == caller.id and c.owner == ""
    stored = WorkerQueue(settings, "w").get(a.id)
    assert (stored.frames_total, stored.objects, stored.width, stored.height) == (3, [5], 32, 24)
    assert (stored.video_name, stored.masks_name, stored.options) == ("clip.zip", "m.png", {"flow": "none"})
    assert WorkerQueue(settings, "w").get(c.id).video_name == "other.zip"
    assert r.xlen(k.queue) == 2 and r.get(k.masks(a.id)) == masks.read_bytes()
    queued = [x.job_id for x in caplog.records if x.name == "agss.intake" and x.getMessage() == "job queued"]
    assert queued[0] == a.id and queued[-1] == c.id


def test_retries_end_once_the_worker_stops():
    import copy
    import threading

    from redis.backoff import NoBackoff

    from service.jobs.queue import StoppableRetry

    stop = threading.Event()
    retry = StoppableRetry(stop, NoBackoff(), 3, (redis.ConnectionError,))
    tries = []

    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise redis.ConnectionError("down")
        return "up"

    assert retry.call_with_retry(flaky, lambda e: None) == "up" and len(tries) == 3  # retried while running
    tries.clear()
    assert retry.call_with_retry(flaky, lambda e: None, lambda e: isinstance(e, redis.ConnectionError)) == "up"
    assert len(tries) == 3  # the caller's rule sees the error itself
    tries.clear()
    with pytest.raises(redis.ConnectionError):
        retry.call_with_retry(flaky, lambda e: None, lambda e: False)  # the caller's own rule still holds
    assert len(tries) == 1
    stop.set()
    tries.clear()
    with pytest.raises(redis.ConnectionError):
        retry.call_with_retry(flaky, lambda e: None)
    assert len(tries) == 1  # stopping: the first failure is the last
    twin = copy.deepcopy(retry)  # what each connection of a pool does with it
    assert isinstance(twin, StoppableRetry) and twin.stop is stop and twin._retries == 3
    assert tuple(twin._supported_errors) == tuple(retry._supported_errors) and twin._backoff is not retry._backoff
    stop.clear()
    tries.clear()
    assert twin.call_with_retry(flaky, lambda e: None) == "up" and len(tries) == 3


def test_a_worker_queue_shares_its_stop_with_every_connection(env):
    import threading

    settings, video, r, k = env
    stop = threading.Event()
    q = WorkerQueue(settings, "w1", stop=stop)
    q.r.ping()
    conn = q.r.connection_pool.get_connection()
    try:
        assert conn.retry.stop is stop and conn.retry._retries == 12
    finally:
        q.r.connection_pool.release(conn)
    assert WorkerQueue(settings, "w2").r.get_retry().stop is not stop


def test_leave_deregisters_once_and_never_raises(env, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="agss.worker")
    settings, video, r, k = env
    q = WorkerQueue(settings, "w-leave")
    q.heartbeat({})
    q.leave()
    assert not r.exists(k.worker("w-leave"))
    handed = WorkerQueue(settings.model_copy(update={"redis_url": None}), "w-client", client=redis.from_url(
        settings.redis_url))
    handed.heartbeat({})
    handed.leave()  # a client handed in: deregistered with it
    assert not r.exists(k.worker("w-client"))
    from service.runtime.redis import free_port

    gone = WorkerQueue(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}), "w-gone")
    gone.leave()  # Redis is gone: the heartbeat expires by itself
    (line,) = [x for x in caplog.records if x.getMessage().startswith("left without deregistering (")]
    assert line.getMessage().endswith("); the heartbeat expires by itself") and line.worker_id == "w-gone"
    assert "Error" in line.getMessage() or "refused" in line.getMessage()


# -- the scripts' own rules, at their edges (each test names the rule it holds) ----------------------------------
def _raw_submit(q: WorkerQueue, job_id: str | None = None, **kw) -> Outcome:
    job_id = job_id or uuid.uuid4().hex
    record = Job(id=job_id, frames_total=3, objects=[1], created_at=now(), owner=kw.get("owner", "")).to_hash()
    args = dict(job_id=job_id, record=record, max_queued=100, idem_key=None, idem_ttl=60)
    args.update(kw)
    return q.run(scripts.submit(q.keys, **args))


def test_the_bound_on_queued_input_bytes_at_its_edges(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    assert _raw_submit(q, input_bytes=10**9, max_input_bytes=0).ok  # 0: no bound at all
    r.hset(k.stats, "input_bytes", 0)
    assert _raw_submit(q, input_bytes=60, max_input_bytes=100).ok
    assert _raw_submit(q, input_bytes=40, max_input_bytes=100).ok  # exactly at the bound: fits
    full = _raw_submit(q, input_bytes=1, max_input_bytes=100)
    assert (full.kind, full.value) == ("full_bytes", "100")
    r.hset(k.stats, "input_bytes", 0)
    assert _raw_submit(q, input_bytes=2, max_input_bytes=1).kind == "full_bytes"  # a bound of one byte


def test_an_owner_s_queued_quota_and_rate_at_their_edges(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    assert _raw_submit(q, owner="o1", owner_max_queued=1).ok
    quota = _raw_submit(q, owner="o1", owner_max_queued=1)
    assert (quota.kind, quota.value) == ("quota", "1")  # a quota of one job
    assert _raw_submit(q, owner="o1", owner_max_queued=0).ok  # 0: no quota
    usage = {a.decode(): b.decode() for a, b in r.hgetall(k.owner("o1")).items()}
    assert usage == {"n:queued": "2"}  # counted as queued, nothing else touched
    # rate 1/s, a burst of one: a second submission at the same instant is refused ...
    assert _raw_submit(q, owner="o2", owner_rate=1.0, at=100.0).ok
    same = _raw_submit(q, owner="o2", owner_rate=1.0, at=100.0)
    assert (same.kind, float(same.value)) == ("rate", 1.0)
    # ... and half a second later half a token has come back: half a second more to wait
    later = _raw_submit(q, owner="o2", owner_rate=1.0, at=100.5)
    assert (later.kind, float(later.value)) == ("rate", 0.5)
    assert _raw_submit(q, owner="o2", owner_rate=1.0, at=101.0).ok
    slow = _raw_submit(q, owner="o3", owner_rate=0.5, at=10.0), _raw_submit(q, owner="o3", owner_rate=0.5, at=11.0)
    assert slow[0].ok and (slow[1].kind, float(slow[1].value)) == ("rate", 1.0)  # 0.5 token: 1 s to the next


def test_a_key_without_a_running_limit_is_never_parked(env):
    from service.jobs import apikeys

    settings, video, r, k = env
    key = apikeys.create(r, k, "free")  # max_running 0: no limit
    caller = store_call(settings, lambda s: apikeys.verify(s.r, k, key))
    job = Job(id=uuid.uuid4().hex, frames_total=5, objects=[1], width=4, height=4, created_at=now())
    store_call(settings, lambda s: s.submit(job, video, video.with_name("m.png"), None, caller))
    q = _queue(settings, "w1")
    assert q.start(q.claim(block_ms=100)).ok
    usage = {a.decode(): b.decode() for a, b in r.hgetall(k.owner(caller.id)).items()}
    assert usage["n:queued"] == "0" and usage["n:running"] == "1" and "n:" not in usage


def test_a_restart_keeps_the_first_start_time(env):
    settings, video, r, k = env
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2", lease_seconds=0)
    job, c1 = _running(settings, video, w1)
    first = w1.get(job.id).started_at
    assert w1.handback(c1).ok  # queued again: started anew below
    c2 = w1.claim(block_ms=100)
    assert w1.start(c2).ok and w1.get(job.id).started_at == first
    c3 = w2.claim(block_ms=100)  # a takeover of the running job
    assert w2.start(c3).ok
    again = w2.get(job.id)
    assert again.started_at == first and again.claimed_at >= first and again.worker == "w2"


def test_start_of_a_job_whose_record_is_gone(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job = _submit(settings, video)
    r.delete(k.job(job.id))  # expired while queued
    claim = q.claim(block_ms=100)
    assert q.start(claim).kind == "missing"
    assert r.xpending(k.queue, GROUP)["pending"] == 0 and r.xlen(k.queue) == 0  # acked and deleted


def test_hand_backs_without_progress_count_as_attempts(env):
    settings, video, r, k = env
    q = _queue(settings.model_copy(update={"max_attempts": 1}), "w1")
    job, c1 = _running(settings, video, q)
    assert q.handback(c1).ok  # no frame published in between
    c2 = q.claim(block_ms=100)
    out = q.start(c2)
    assert (out.kind, out.value) == ("exhausted", "2")
    assert r.xpending(k.queue, GROUP)["pending"] == 1  # left for the caller to dead-letter


def test_every_owner_check_answers_lost_once_the_entry_is_acked(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    assert q.publish(claim, 0, []).ok and q.finish(claim, JobStatus.SUCCEEDED).ok  # acked and deleted
    for out in (q.publish(claim, 1, []), q.renew(claim), q.handback(claim), q.save_checkpoint(claim, 1, b"s"),
                q.finish(claim, JobStatus.SUCCEEDED, check_owner=True)):
        assert out.kind in ("lost", "state"), out
    assert q.publish(claim, 1, []).kind == "lost" and q.renew(claim).kind == "lost"
    assert q.handback(claim).kind == "lost" and q.save_checkpoint(claim, 1, b"s").kind == "lost"


def test_stage_counters_per_frame(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    assert q.publish(claim, 0, []).ok  # no stages: no stage counters
    assert r.hget(k.stats, "stage_frames") is None
    assert q.publish(claim, 1, [], stages={"decode": 0.25, "network": 1.5, "publish": 0.125}).ok
    assert q.publish(claim, 2, [], dropped=True).ok
    stats = {a.decode(): b.decode() for a, b in r.hgetall(k.stats).items()}
    assert (float(stats["stage:decode"]), float(stats["stage:network"]), float(stats["stage:publish"])) == (
        0.25, 1.5, 0.125)
    assert stats["stage_frames"] == "1" and stats["frames"] == "2" and stats["frames_dropped"] == "1"


def test_a_handed_back_claim_can_no_longer_finish_the_job(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    assert q.handback(claim).ok
    assert q.finish(claim, JobStatus.FAILED, "x", "y").kind == "lost"  # queued again: not this claim's
    assert q.get(job.id).status == JobStatus.QUEUED


def test_only_a_started_job_adds_to_the_job_seconds(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job = _submit(settings, video)
    assert q.run(scripts.finish(k, job_id=job.id, to=JobStatus.SUCCEEDED, at=now(), result_ttl=60)).ok
    assert r.hget(k.stats, "job_seconds_count") is None and r.hget(k.stats, "job_seconds_sum") is None


def test_renew_resets_the_lease_and_reports_a_missing_job(env):
    import time

    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    time.sleep(0.5)
    idle = r.xpending_range(k.queue, GROUP, "-", "+", 1)[0]["time_since_delivered"]
    assert q.renew(claim).ok
    assert r.xpending_range(k.queue, GROUP, "-", "+", 1)[0]["time_since_delivered"] < idle
    r.delete(k.job(job.id))
    assert q.renew(claim).kind == "missing"


def _owned(settings, video, r, k, name: str, **limits):
    from service.jobs import apikeys

    key = apikeys.create(r, k, name, **limits)
    caller = store_call(settings, lambda s: apikeys.verify(s.r, k, key))

    def submit() -> Job:
        job = Job(id=uuid.uuid4().hex, frames_total=5, objects=[1], width=4, height=4, created_at=now())
        return store_call(settings, lambda s: s.submit(job, video, video.with_name("m.png"), None, caller))

    return caller, submit


def _usage(r, k, owner) -> dict:
    return {a.decode(): b.decode() for a, b in r.hgetall(k.owner(owner)).items()}


def test_a_hand_back_moves_the_key_s_usage_and_unparks_its_next_queued_job(env):
    settings, video, r, k = env
    caller, submit = _owned(settings, video, r, k, "one-at-a-time", max_running=1)
    one, two, three = submit(), submit(), submit()
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2")
    c1 = w1.claim(block_ms=100)
    assert c1.job_id == one.id and w1.start(c1).ok
    for expect in (two, three):  # both parked behind one
        c = w2.claim(block_ms=100)
        assert c.job_id == expect.id and w2.start(c).kind == "parked"
    store_call(settings, lambda s: s.cancel(two.id))  # parked, then cancelled: unpark skips it
    assert r.lrange(k.parked(caller.id), 0, -1) == [two.id.encode(), three.id.encode()]
    assert w1.handback(c1).ok
    assert _usage(r, k, caller.id) == {"n:queued": "2", "n:running": "0"}  # one and three queued
    assert r.llen(k.parked(caller.id)) == 0
    queued = [f[b"job"].decode() for _, f in r.xrange(k.queue)]
    assert queued == [one.id, three.id]  # one back in the queue, three unparked; the old entry deleted
    assert r.xpending(k.queue, GROUP)["pending"] == 0


def test_a_finished_owned_job_frees_its_running_slot(env):
    settings, video, r, k = env
    caller, submit = _owned(settings, video, r, k, "solo", max_running=1)
    one = submit()
    q = _queue(settings, "w1")
    c = q.claim(block_ms=100)
    assert q.start(c).ok and _usage(r, k, caller.id) == {"n:queued": "0", "n:running": "1"}
    assert q.finish(c, JobStatus.SUCCEEDED).ok
    assert _usage(r, k, caller.id) == {"n:queued": "0", "n:running": "0"} and q.get(one.id).owner == caller.id


def test_a_hand_back_of_a_job_cancelled_meanwhile_does_not_bring_it_back(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    store_call(settings, lambda s: s.cancel(job.id))  # the API ends it; the worker's entry is still pending
    out = q.handback(claim)
    assert (out.kind, out.status) == ("state", JobStatus.CANCELLED)
    assert q.get(job.id).status == JobStatus.CANCELLED
    assert r.xlen(k.queue) == 0 and r.xpending(k.queue, GROUP)["pending"] == 0  # acked and deleted, not requeued


def test_a_hand_back_leaves_one_entry_in_the_queue(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    assert q.handback(claim).ok and r.xlen(k.queue) == 1


def test_finish_of_a_missing_job_and_the_job_seconds(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    assert q.run(scripts.finish(k, job_id="nope", to=JobStatus.FAILED, at=now(), result_ttl=60)).kind == "missing"
    job, claim = _running(settings, video, q)
    started = q.get(job.id).started_at
    assert q.run(scripts.finish(k, job_id=job.id, to=JobStatus.SUCCEEDED, at=started + 10, result_ttl=60,
                                msg_id=claim.msg_id, worker="w1")).ok
    assert float(r.hget(k.stats, "job_seconds_sum")) == pytest.approx(10, abs=1e-3)
    assert r.hget(k.stats, "job_seconds_count") == b"1"


def _live(settings, video, r, k, frames_in=0, done=0, current=None):
    """A running session that has received `frames_in` frames and published `done`."""
    session = store_call(settings, lambda s: s.create_session(intake.new_session(settings, intake.SessionOptions())))
    for _ in range(frames_in):
        store_call(settings, lambda s: s.push_frame(session.id, b"\xff\xd8\xff", 64))
    q = _queue(settings, "w1")
    c = q.claim(block_ms=100)
    assert q.start(c).ok and all(q.publish(c, i, []).ok for i in range(done))
    if current is not None:
        q.mark(session.id, current=current)
    return session, q


def _prompt(settings, job_id, frame):
    return store_call(settings, lambda s: s.add_prompts(job_id, {frame: '{"1":{"remove":true}}'}, []))


def test_session_prompts_are_refused_for_frames_computed_or_being_computed(env):
    settings, video, r, k = env
    s, q = _live(settings, video, r, k, frames_in=5, done=2, current=2)
    for f in (0, 1, 2):  # published, or being computed
        with pytest.raises(JobConflictError, match="is on frame 2"):
            _prompt(settings, s.id, f)
    _prompt(settings, s.id, 3)
    assert [f for f, _ in q.prompts_since(s.id)[1]] == [3]
    s2, q2 = _live(settings, video, r, k, frames_in=5, done=2)  # no frame being computed now
    with pytest.raises(JobConflictError):
        _prompt(settings, s2.id, 0)
    _prompt(settings, s2.id, 2)  # the next one to compute
    assert [f for f, _ in q2.prompts_since(s2.id)[1]] == [2]


def test_a_session_prompt_for_next_is_the_next_frame_received(env):
    settings, video, r, k = env
    s, q = _live(settings, video, r, k, frames_in=3)
    _prompt(settings, s.id, -1)
    _prompt(settings, s.id, 0)
    assert [f for f, _ in q.prompts_since(s.id)[1]] == [3, 0]
    assert q.get(s.id).objects == []  # removals start no object, and the list stays a list
    assert 0 < r.ttl(k.prompts(s.id)) <= 900
    started = store_call(settings, lambda st: st.add_prompts(s.id, {4: '{"5":{"box":[0,0,2,2]}}'}, [5]))
    assert started.objects == [5]


def test_a_session_s_frames_in_with_policy_all_and_latest(env):
    from service.jobs.errors import BacklogFullError

    settings, video, r, k = env
    opts = intake.SessionOptions(policy="all", max_pending=2)
    s = store_call(settings, lambda st: st.create_session(intake.new_session(settings, opts)))

    def push(sid=s.id, limit=2):
        return store_call(settings, lambda st: st.push_frame(sid, b"\xff\xd8\xff", limit))

    assert [push(), push()] == [0, 1]
    with pytest.raises(BacklogFullError, match="^2 frames are waiting"):
        push()  # two waiting: the bound
    q = _queue(settings, "w1")
    c = q.claim(block_ms=100)
    assert q.start(c).ok and q.publish(c, 0, []).ok
    assert push() == 2  # one waiting again
    with pytest.raises(BacklogFullError, match="^2 frames are waiting"):
        push()  # frames 1 and 2 wait (frame 0 is done)
    assert 0 < r.ttl(k.input(s.id)) <= 900
    latest = store_call(settings, lambda st: st.create_session(intake.new_session(settings, intake.SessionOptions())))
    assert [push(latest.id, 1) for _ in range(3)] == [0, 1, 2]  # policy latest never refuses
    with pytest.raises(JobNotFoundError):
        push("nope")
    store_call(settings, lambda st: st.end_session(latest.id))
    with pytest.raises(JobConflictError, match=r"\(closing\)$"):
        push(latest.id)
    store_call(settings, lambda st: st.cancel(latest.id))
    with pytest.raises(JobConflictError, match=r"\(cancelled\)$"):
        push(latest.id)
    raw = q.run(scripts.session_end(k, session_id=latest.id, at=now()))
    assert (raw.kind, raw.status) == ("state", JobStatus.CANCELLED)
    running = q.run(scripts.session_end(k, session_id=s.id, at=now()))
    assert running.ok and q.get(s.id).closing == 1


def test_no_checkpoint_for_a_job_that_is_not_running(env):
    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    store_call(settings, lambda s: s.cancel(job.id))  # the entry is still the worker's
    out = q.save_checkpoint(claim, 0, b"s")
    assert (out.kind, out.status) == ("state", JobStatus.CANCELLED) and not r.exists(k.checkpoint(job.id))


def test_publishing_renews_the_lease_too(env):
    import time

    settings, video, r, k = env
    q = _queue(settings, "w1")
    job, claim = _running(settings, video, q)
    time.sleep(0.5)
    idle = r.xpending_range(k.queue, GROUP, "-", "+", 1)[0]["time_since_delivered"]
    assert q.publish(claim, 0, []).ok
    assert r.xpending_range(k.queue, GROUP, "-", "+", 1)[0]["time_since_delivered"] < idle
