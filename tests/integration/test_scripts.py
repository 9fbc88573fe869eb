"""Every guard of every Lua script, in-process against a real Redis: the API side (JobStore) and two
workers (WorkerQueue) driven step by step, with no timing involved."""

from __future__ import annotations

import asyncio
import functools
import uuid

import pytest
import redis

from service.config import Settings
from service.jobs import scripts
from service.jobs.errors import JobConflictError, JobNotFoundError, QueueFullError
from service.jobs.keys import GROUP, Keys, frame_index
from service.jobs.queue import WorkerQueue
from service.jobs.records import Job, JobStatus, now
from service.jobs.store import JobStore


def run_async(fn):
    """Run an async test body in its own event loop (one JobStore per loop)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


@pytest.fixture
def env(redis_url, prefix, tmp_path):
    settings = Settings(redis_url=redis_url, key_prefix=prefix, max_queued_jobs=2, lease_seconds=30,
                        result_ttl_seconds=600, max_attempts=3)
    video = tmp_path / "v.zip"
    video.write_bytes(b"x" * 5000)
    (tmp_path / "m.png").write_bytes(b"masks")
    r = redis.from_url(redis_url)
    yield settings, video, r, Keys(prefix)
    r.close()


def _queue(settings: Settings, name: str, **over) -> WorkerQueue:
    q = WorkerQueue(settings.model_copy(update=over) if over else settings, name)
    q.ensure_group()
    return q


async def _submit(store: JobStore, video, key: str | None = None, caller=None) -> Job:
    job = Job(id=uuid.uuid4().hex, frames_total=5, objects=[1], width=4, height=4, created_at=now())
    return await store.submit(job, video, video.with_name("m.png"), key, caller)


async def _running(store, video, q: WorkerQueue):
    job = await _submit(store, video)
    claim = q.claim(block_ms=100)
    assert claim.job_id == job.id and q.start(claim).ok
    return job, claim


@run_async
async def test_submit_idempotency_and_queue_bound(env):
    settings, video, r, k = env
    store = JobStore(settings)
    a = await _submit(store, video, key="same")
    again = await _submit(store, video, key="same")
    assert again.id == a.id and r.xlen(k.queue) == 1
    assert r.llen(k.video(a.id)) == 1 and r.get(k.masks(a.id)) == b"masks"
    await _submit(store, video)
    with pytest.raises(QueueFullError):
        await _submit(store, video)  # max_queued_jobs = 2
    assert r.xlen(k.queue) == 2
    # the refused and the repeated submissions left no inputs behind
    assert sum(1 for _ in r.scan_iter(match=k.video("*"))) == 2
    assert int(r.hget(k.stats, "n:queued")) == 2 and int(r.hget(k.stats, "submitted")) == 2
    await store.close()


@run_async
async def test_start_marks_running_and_skips_ended_jobs(env):
    settings, video, r, k = env
    store = JobStore(settings)
    q = _queue(settings, "w1")
    job, claim = await _running(store, video, q)
    got = await store.get(job.id)
    assert got.status == JobStatus.RUNNING and got.worker == "w1" and got.started_at > 0
    assert int(r.hget(k.stats, "n:running")) == 1 and int(r.hget(k.stats, "n:queued")) == 0
    other = await _submit(store, video)
    await store.cancel(other.id)
    skipped = q.claim(block_ms=100)
    out = q.start(skipped)
    assert out.kind == "state" and out.status == JobStatus.CANCELLED
    pending = r.xpending_range(k.queue, GROUP, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [claim.msg_id]  # the skipped entry was acked
    await store.close()


@run_async
async def test_publish_only_in_order_and_only_by_the_owner(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2")
    job, claim = await _running(store, video, w1)
    assert w1.publish(claim, 0, []).ok
    raw = w1.run(scripts.publish(k, job_id=job.id, msg_id=claim.msg_id, worker="w1", index=0, objects="[]",
                                 events="[]", meta="{}", at=now()))
    assert (raw.kind, raw.value) == ("order", "1")  # a second publish of frame 0 is refused ...
    assert w1.publish(claim, 0, []).ok  # ... which a worker retrying after a lost reply takes as done
    assert r.xlen(k.frames(job.id)) == 1
    assert w1.publish(claim, 2, []).kind == "order"  # a gap
    assert w2.publish(claim, 1, []).kind == "lost"  # not the owner
    assert w1.publish(claim, 1, [{"id": 1}]).ok
    assert [frame_index(e[0]) for e in r.xrange(k.frames(job.id))] == [0, 1]
    page = await store.frames(job.id)
    assert [f["index"] for f in page.frames] == [0, 1] and page.frames[1]["objects"] == [{"id": 1}]
    assert (await store.get(job.id)).frames_done == 2 and int(r.hget(k.stats, "frames")) == 2
    await store.close()


@run_async
async def test_a_lost_lease_stops_the_old_owner(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1 = _queue(settings, "w1")
    w2 = _queue(settings, "w2", lease_seconds=0)  # takes over anything pending, however fresh
    job, claim = await _running(store, video, w1)
    assert w1.publish(claim, 0, []).ok
    taken = w2.claim(block_ms=100)
    assert taken.msg_id == claim.msg_id and taken.deliveries == 2
    for out in (w1.publish(claim, 1, []), w1.renew(claim), w1.finish(claim, JobStatus.SUCCEEDED),
                w1.handback(claim)):
        assert out.kind == "lost", out
    assert w2.start(taken).ok and (await store.get(job.id)).worker == "w2"
    assert w2.publish(taken, 1, []).ok  # the new owner continues after the last published frame
    renewed = w2.renew(taken)
    assert renewed.ok and renewed.status == JobStatus.RUNNING
    await store.close()


@run_async
async def test_cancel_while_running(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1 = _queue(settings, "w1")
    job, claim = await _running(store, video, w1)
    assert w1.publish(claim, 0, []).ok
    cancelled = await store.cancel(job.id)
    assert cancelled.status == JobStatus.CANCELLED and cancelled.error_code == "cancelled"
    assert [frame_index(e[0]) for e in r.xrange(k.frames(job.id))] == [0, -1]  # frames, then the end marker
    assert not r.exists(k.video(job.id)) and not r.exists(k.masks(job.id))
    assert 0 < r.ttl(k.job(job.id)) <= 600 and 0 < r.ttl(k.frames(job.id)) <= 600
    out = w1.publish(claim, 1, [])
    assert out.kind == "state" and out.status == JobStatus.CANCELLED
    renewed = w1.renew(claim)
    assert renewed.ok and renewed.status == JobStatus.CANCELLED  # how the worker learns of the cancel
    assert w1.finish(claim, JobStatus.SUCCEEDED).kind == "state"
    with pytest.raises(JobConflictError):
        await store.cancel(job.id)
    with pytest.raises(JobNotFoundError):
        await store.cancel("no-such-job")
    assert int(r.hget(k.stats, "n:cancelled")) == 1 and int(r.hget(k.stats, "n:running")) == 0
    frames = [f["index"] async for f in store.stream(job.id)]
    assert frames == [0]  # the stream ends at the end marker
    await store.close()


@run_async
async def test_handback_requeues_the_job(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2")
    job, claim = await _running(store, video, w1)
    assert w1.publish(claim, 0, []).ok
    assert w1.handback(claim).ok
    back = await store.get(job.id)
    assert back.status == JobStatus.QUEUED and back.worker == "" and back.frames_done == 1
    assert r.xpending(k.queue, GROUP)["pending"] == 0  # the old entry is acked ...
    again = w2.claim(block_ms=100)
    assert again.job_id == job.id and again.msg_id != claim.msg_id  # ... and a new one queued
    assert w2.start(again).ok and w2.publish(again, 1, []).ok
    assert w1.handback(claim).kind == "lost"
    assert int(r.hget(k.stats, "n:running")) == 1 and int(r.hget(k.stats, "n:queued")) == 0
    await store.close()


@run_async
async def test_finish_closes_the_job(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1 = _queue(settings, "w1")
    job, claim = await _running(store, video, w1)
    for i in range(3):
        assert w1.publish(claim, i, [], stages={"network": 0.5}).ok
    assert w1.finish(claim, JobStatus.SUCCEEDED, frames_total=3).ok
    done = await store.get(job.id)
    assert done.status == JobStatus.SUCCEEDED and done.frames_total == 3 and done.finished_at >= done.started_at
    assert r.xpending(k.queue, GROUP)["pending"] == 0
    assert not r.exists(k.video(job.id)) and 0 < r.ttl(k.job(job.id)) <= 600
    stats = {a.decode(): b.decode() for a, b in r.hgetall(k.stats).items()}
    assert stats["n:succeeded"] == "1" and stats["job_seconds_count"] == "1" and stats["stage_frames"] == "3"
    assert float(stats["stage:network"]) == 1.5
    assert w1.finish(claim, JobStatus.FAILED).kind == "state"  # ended once
    page = await store.frames(job.id, 3, wait=5)  # long-poll on an ended job returns at once
    assert page.frames == [] and page.status == JobStatus.SUCCEEDED
    await store.close()


@run_async
async def test_long_poll_wakes_on_publish(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1 = _queue(settings, "w1")
    job, claim = await _running(store, video, w1)
    poll = asyncio.create_task(store.frames(job.id, 0, wait=30))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await asyncio.to_thread(w1.publish, claim, 0, [])
    page = await asyncio.wait_for(poll, 10)
    assert [f["index"] for f in page.frames] == [0] and page.next == 1
    await store.close()


@run_async
async def test_dead_letter_after_the_attempts_without_progress(env, tmp_path):
    """A job whose workers keep dying before they publish anything fails, with a dead letter, after
    max_attempts deliveries; deliveries during which it made progress do not count."""
    from service.worker.worker import Worker

    settings, video, r, k = env
    store = JobStore(settings)
    job = await _submit(store, video)
    takers = [_queue(settings, f"w{i}", lease_seconds=0) for i in range(6)]
    first = takers[0].claim(block_ms=100)
    assert takers[0].start(first).ok and takers[0].publish(first, 0, []).ok  # progress, then killed
    for q in takers[1:4]:  # three deliveries in a row without progress
        c = q.claim(block_ms=100)
        assert q.start(c).ok, c
    last = takers[4].claim(block_ms=100)
    assert last.deliveries == 5
    worker = Worker(settings.model_copy(update={"model": "flow-only", "lease_seconds": 0}), worker_id="w4")
    worker.process(last)
    failed = await store.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error_code == "attempts_exhausted"
    (entry,) = r.xrange(k.deadletter)
    assert entry[1][b"job"].decode() == job.id and entry[1][b"deliveries"] == b"5"
    assert r.xpending(k.queue, GROUP)["pending"] == 0
    await store.close()


@run_async
async def test_prompts_only_for_frames_not_reached_all_or_none(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1 = _queue(settings, "w1")
    job = await _submit(store, video)  # 5 frames, object 1
    box = '{"9":{"box":[0,0,2,2]}}'
    # queued: any frame from frames_done on, frame 0 included
    got = await store.add_prompts(job.id, {0: box}, [9])
    assert got.objects == [1, 9] and r.xlen(k.prompts(job.id)) == 1
    claim = w1.claim(block_ms=100)
    assert w1.start(claim).ok and w1.publish(claim, 0, []).ok and w1.publish(claim, 1, []).ok
    # running on frame 2: frames 0..2 are refused, with the frame the job is on
    for f in (0, 1, 2):
        with pytest.raises(JobConflictError, match="is on frame 2"):
            await store.add_prompts(job.id, {f: box}, [])
    with pytest.raises(JobConflictError):  # one refused frame refuses the whole request
        await store.add_prompts(job.id, {2: box, 4: box}, [4])
    assert r.xlen(k.prompts(job.id)) == 1 and (await store.get(job.id)).objects == [1, 9]
    from service.media.errors import MediaError

    with pytest.raises(MediaError, match="does not exist"):
        await store.add_prompts(job.id, {5: box}, [])
    assert (await store.add_prompts(job.id, {3: box, 4: '{"12":{"remove":true}}'}, [12])).objects == [1, 9, 12]
    last, entries = w1.prompts_since(job.id)
    assert [f for f, _ in entries] == [0, 3, 4]
    assert w1.prompts_since(job.id, last) == (last, [])
    await store.cancel(job.id)
    with pytest.raises(JobConflictError, match="has ended"):
        await store.add_prompts(job.id, {4: box}, [])
    with pytest.raises(JobNotFoundError):
        await store.add_prompts("no-such-job", {4: box}, [])
    assert not r.exists(k.prompts(job.id))  # inputs go when the job ends
    await store.close()


@run_async
async def test_checkpoints_only_from_the_owner_and_never_ahead(env):
    settings, video, r, k = env
    store = JobStore(settings)
    w1 = _queue(settings, "w1")
    w2 = _queue(settings, "w2", lease_seconds=0)
    job, claim = await _running(store, video, w1)
    assert w1.load_checkpoint(job.id) is None
    assert w1.publish(claim, 0, []).ok and w1.publish(claim, 1, []).ok
    out = w1.save_checkpoint(claim, 3, b"ahead")
    assert (out.kind, out.value) == ("order", "2")  # state past the published frames
    assert w1.save_checkpoint(claim, 2, b"state-2").ok
    assert w1.load_checkpoint(job.id) == (2, b"state-2", "")
    taken = w2.claim(block_ms=100)
    assert w1.save_checkpoint(claim, 2, b"stale").kind == "lost"
    assert w2.start(taken).ok and w2.load_checkpoint(job.id) == (2, b"state-2", "")
    assert w2.finish(taken, JobStatus.SUCCEEDED).ok
    assert not r.exists(k.checkpoint(job.id))
    assert w2.save_checkpoint(taken, 2, b"x").kind == "lost"  # acked: nobody owns it any more
    await store.close()


@run_async
async def test_quotas_of_a_key_and_the_bound_on_queued_input_bytes(env):
    from service.jobs import apikeys
    from service.jobs.errors import QuotaError

    settings, video, r, k = env
    settings = settings.model_copy(update={"max_queued_jobs": 100})
    store = JobStore(settings)
    key = apikeys.create(r, k, "tenant-a", max_running=1, max_queued=2, rate=0)
    a = await apikeys.verify(store.r, k, key)
    one, two = await _submit(store, video, caller=a), await _submit(store, video, caller=a)
    with pytest.raises(QuotaError) as e:
        await _submit(store, video, caller=a)
    assert e.value.retry_after >= 1
    # the bytes of queued inputs: two jobs of 5005 bytes are held; a third does not fit in 12000
    tight = JobStore(settings.model_copy(update={"max_queued_input_bytes": 12_000}))
    with pytest.raises(QueueFullError, match="bytes") as e:
        await _submit(tight, video)
    assert e.value.retry_after >= 1
    await tight.close()
    assert int(r.hget(k.stats, "input_bytes")) == 2 * 5005
    # max_running 1: the second job of the key is parked, and queued again when the first ends
    w1, w2 = _queue(settings, "w1"), _queue(settings, "w2")
    c1 = w1.claim(block_ms=100)
    assert w1.start(c1).ok
    c2 = w2.claim(block_ms=100)
    assert w2.start(c2).kind == "parked" and (await store.get(two.id)).status == JobStatus.QUEUED
    assert r.lrange(k.parked(a.id), 0, -1) == [two.id.encode()] and r.xlen(k.queue) == 1  # c2's entry is gone
    assert w1.finish(c1, JobStatus.SUCCEEDED).ok
    assert r.xlen(k.queue) == 1 and r.llen(k.parked(a.id)) == 0  # c1 deleted, two queued again
    again = w2.claim(block_ms=100)
    assert again.job_id == two.id and w2.start(again).ok
    usage = {x.decode(): y.decode() for x, y in r.hgetall(k.owner(a.id)).items()}
    assert usage["n:queued"] == "0" and usage["n:running"] == "1"
    assert int(r.hget(k.stats, "input_bytes")) == 5005
    assert one.owner == a.id
    await store.close()


@run_async
async def test_rate_of_a_key_and_ownership(env):
    from service.jobs import apikeys
    from service.jobs.errors import QuotaError

    settings, video, r, k = env
    settings = settings.model_copy(update={"max_queued_jobs": 100})
    store = JobStore(settings)
    key_a = apikeys.create(r, k, "a", rate=0.5)
    a = await apikeys.verify(store.r, k, key_a)
    b = await apikeys.verify(store.r, k, apikeys.create(r, k, "b"))
    job = await _submit(store, video, caller=a)  # a burst of one
    with pytest.raises(QuotaError) as e:
        await _submit(store, video, caller=a)
    assert 1 <= e.value.retry_after <= 2  # one token per 2 s
    with pytest.raises(JobNotFoundError):  # another tenant's job does not exist for b
        await store.get(job.id, b)
    with pytest.raises(JobNotFoundError):
        await store.cancel(job.id, b)
    assert (await store.get(job.id, a)).id == job.id
    assert (await store.find_idempotent("x", b)) is None
    from service.jobs.errors import UnauthenticatedError

    with pytest.raises(UnauthenticatedError):
        await apikeys.verify(store.r, k, key_a[:-1] + ("x" if key_a[-1] != "x" else "y"))  # a wrong secret
    assert apikeys.revoke(r, k, "a") and not apikeys.revoke(r, k, "a")
    with pytest.raises(UnauthenticatedError, match="revoked"):
        await apikeys.verify(store.r, k, key_a)
    stored = b" ".join(v for key in r.scan_iter(match=k.prefix + "apikey*") for v in r.hgetall(key).values()
                       if r.type(key) == b"hash")
    assert b"agss_" not in stored  # no key is readable from Redis
    await store.close()


@run_async
async def test_a_session_ends_with_its_inputs_gone(env):
    """A session holds no input bytes: its finish must not trip over a zero (it did: -0 is no integer
    to Redis, and the script stopped half-way, leaving the session ended without its end marker)."""
    from service.jobs import intake

    settings, video, r, k = env
    store = JobStore(settings)
    session = await store.create_session(intake.new_session(settings, intake.SessionOptions()))
    await store.push_frame(session.id, b"\xff\xd8\xff", 8)
    w1 = _queue(settings, "w1")
    claim = w1.claim(block_ms=100)
    assert w1.start(claim).ok and w1.publish(claim, 0, [], meta={"dropped": True}, dropped=True).ok
    assert w1.finish(claim, JobStatus.SUCCEEDED, frames_total=1, ended_by="client").ok
    assert [frame_index(e[0]) for e in r.xrange(k.frames(session.id))] == [0, -1]
    assert not r.exists(k.input(session.id)) and int(r.hget(k.stats, "input_bytes") or 0) == 0
    done = await store.get(session.id)
    assert done.frames_dropped == 1 and done.ended_by == "client"
    await store.close()
