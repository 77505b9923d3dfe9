"""zeroi2v.rows: one JSON per finished row, resumable, in one process, a spawn pool or submitit jobs."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zeroi2v import rows as rows_mod
from zeroi2v.rows import ResultStore, Row, config_hash, make_executor, run_rows

TESTS = Path(__file__).parent
FIX = "rows_fixture"  # tests/rows_fixture.py: importable by spawned workers and jobs


def _row(fn, fold, method="zeroi2v", h=None, **kwargs):
    key = {"task": "AR_in_Dark", "shots": 4, "fold": fold, "method": method}
    return Row(key, f"{FIX}:{fn}", kwargs, h or config_hash(kwargs))


def _files(store):
    return sorted(store.dir.glob("*"))


def test_row_ids_readable_safe_and_unique():
    assert _row("square", 1, x=1).id == "AR_in_Dark__shots4__fold1__zeroi2v"
    keys = [{"task": "a b"}, {"task": "a_b"}, {"task": "a/b"}, {"task": "a__b"}, {"task": "a", "m": "b"},
            {"task": "fold1"}, {"task": "fold1", "fold": 1}, {"fold": 1, "task": "x"}, {"task": "x", "fold": 1},
            {"task": "x", "fold": "1"}, {"task": "x", "fold": 1.0}, {"task": "x", "fold": "fold1"}, {"task": "_a"}, {"task": ".a"}, {"task": ""},
            {"task": "é"}, {"task": "e"}, {"task": "x" * 300}, {"task": "x" * 301}]
    ids = [Row(k, "m:f").id for k in keys]
    assert len(set(ids)) == len(ids), ids
    for i in ids:
        assert i[0].isalnum() and len(i) <= 170 and all(c.isascii() and (c.isalnum() or c in "._+-") for c in i), i
    assert Row({"task": "a b"}, "m:f").id.startswith("a_b__")  # sanitised: still readable, plus a key hash


def test_resume_after_a_kill_skips_finished_rows_and_never_duplicates(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    store = ResultStore(tmp_path / "out")
    rows = [_row("killed_on_second_call", f, x=f, calls=str(calls)) for f in (1, 2, 3)]
    log = []
    with pytest.raises(KeyboardInterrupt):
        run_rows(rows, store, log=log.append)
    assert [p.name for p in _files(store)] == [f"{rows[0].id}.json"]  # the row in flight is not written
    first = store.path(rows[0])
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    assert any("interrupted" in line and rows[1].id in line for line in log)

    summary = run_rows(rows, store, log=log.append)
    assert (summary.done, summary.skipped, summary.failed) == (2, 1, [])
    assert [p.name for p in _files(store)] == sorted(f"{r.id}.json" for r in rows)  # one file per key, no .tmp
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before  # the finished row is untouched
    assert sorted(os.listdir(calls)) == ["call0_x1", "call1_x2", "call2_x2", "call3_x3"]  # row 1 ran once
    records = store.rows()
    assert [r["key"] for r in records] == [r.key for r in rows]
    assert [r["value"] for r in records] == [1, 4, 9]
    assert all(r["config_hash"] == row.config_hash and r["seconds"] >= 0 and r["finished_at"]
               for r, row in zip(records, rows))

    again = run_rows(rows, store, log=log.append)  # a third run does nothing
    assert (again.done, again.skipped) == (0, 3)


def test_a_sigkilled_run_leaves_only_finished_rows(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    store = ResultStore(tmp_path / "out")
    rows = [_row("hangs_on_second_call", f, x=f, calls=str(calls)) for f in (1, 2, 3)]
    script = ("import sys; from zeroi2v.rows import ResultStore, Row, run_rows; "
              f"run_rows([Row(**r) for r in {[r.__dict__ for r in rows]!r}], ResultStore(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(store.folder)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(calls)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    assert len(os.listdir(calls)) == 2
    assert [p.name for p in _files(store)] == [f"{rows[0].id}.json"]
    summary = run_rows(rows, store, log=lambda s: None)
    assert (summary.done, summary.skipped) == (2, 1)
    assert [r["value"] for r in store.rows()] == [1, 4, 9]


def test_a_changed_config_hash_is_refused_before_anything_runs(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    store = ResultStore(tmp_path / "out")
    done = _row("square", 1, x=2)
    run_rows([done], store, log=lambda s: None)
    changed = Row(done.key, done.fn, {"x": 3}, config_hash({"x": 3}))
    pending = _row("killed_on_second_call", 2, x=5, calls=str(calls))
    with pytest.raises(ValueError) as e:
        run_rows([pending, changed], store, log=lambda s: None)
    msg = str(e.value)
    for part in (str(store.path(done)), done.config_hash, changed.config_hash, "--out", "delete that file"):
        assert part in msg
    assert "\n" not in msg
    assert os.listdir(calls) == [] and len(_files(store)) == 1  # nothing ran


def test_a_failing_row_is_one_log_line_and_the_others_go_on(tmp_path):
    store = ResultStore(tmp_path / "out")
    rows = [_row("fail_if", f, x=f, bad=2) for f in (1, 2, 3)]
    log = []
    summary = run_rows(rows, store, log=log.append, describe=lambda r: f"value {r['value']}")
    assert summary.done == 2 and summary.failed == [(rows[1].id, "ValueError: row 2 is broken on two lines")]
    assert not store.path(rows[1]).exists() and store.path(rows[0]).exists() and store.path(rows[2]).exists()
    line = [s for s in log if rows[1].id in s and "FAILED" in s]
    assert line == [f"[rows] 2/3 {rows[1].id}: FAILED: ValueError: row 2 is broken on two lines"]
    assert any(s.startswith(f"[rows] 3/3 {rows[2].id}: done in ") and s.endswith("(value 9)") for s in log)
    bad = Row({"task": "x"}, f"{FIX}:not_json")  # a result that cannot be written fails its row only
    summary = run_rows([bad], store, log=log.append)
    assert summary.failed == [(bad.id, "its result cannot be written: TypeError: Object of type set is not JSON "
                                       "serializable")] and not store.path(bad).exists()


def test_two_workers_run_rows_in_two_processes_with_their_share_of_threads(tmp_path):
    store = ResultStore(tmp_path / "out")
    rows = [_row("torch_threads", f, delay=0.5) for f in (1, 2, 3, 4)] + [_row("fail_if", 5, x=5, bad=5)]
    log = []
    summary = run_rows(rows, store, workers=2, log=log.append)
    assert summary.done == 4 and summary.failed == [(rows[4].id, "ValueError: row 5 is broken on two lines")]
    records = store.rows()
    assert sorted(r["id"] for r in records) == sorted(r.id for r in rows[:4])  # each written once
    pids = {r["pid"] for r in records}
    assert len(pids) == 2 and os.getpid() not in pids
    cores = len(os.sched_getaffinity(0))
    assert {r["threads"] for r in records} == {max(1, cores // 2)}
    assert any("2 worker processes" in s for s in log)


def test_each_worker_gets_its_own_gpu_round_robin(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert rows_mod._visible_gpus() == ["3", "5"]
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    handler = signal.getsignal(signal.SIGINT)
    try:
        seen = []
        for _ in range(3):
            rows_mod._init_worker(counter, ["3", "5"], 1)
            seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    finally:
        signal.signal(signal.SIGINT, handler)
    assert seen == ["3", "5", "3"]


def test_submitit_local_executor_runs_one_job_per_row(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    executor = make_executor("local", tmp_path / "ex", {"timeout_min": 3, "slurm_partition": "gpu"})
    assert executor.cluster == "local" and executor._executor.parameters["timeout_min"] == 3
    store = ResultStore(tmp_path / "out")
    rows = [_row("fail_if", f, x=f, bad=2) for f in (1, 2)]
    log = []
    summary = run_rows(rows, store, launcher="submitit", log=log.append,
                       launcher_options={"cluster": "local", "timeout_min": 2, "slurm_partition": "gpu"})
    assert summary.done == 1 and [i for i, _ in summary.failed] == [rows[1].id]
    assert summary.failed[0][1].endswith(": ValueError: row 2 is broken on two lines")  # the row's own message
    record = json.loads(store.path(rows[0]).read_text())  # written by the job itself
    assert record["value"] == 1 and record["key"] == rows[0].key and record["pid"] != os.getpid()
    assert not store.path(rows[1]).exists()
    assert any(p.name.endswith("_submitted.pkl") for p in (store.folder / "slurm").iterdir())


def test_missing_submitit_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    store = ResultStore(tmp_path / "out")
    with pytest.raises(RuntimeError, match=r"pip install submitit, or 'zeroi2v\[slurm\]'"):
        run_rows([_row("square", 1, x=1)], store, launcher="submitit", log=lambda s: None)
    assert not store.dir.exists() or _files(store) == []


def test_bad_rows_are_refused(tmp_path):
    store = ResultStore(tmp_path / "out")
    with pytest.raises(ValueError, match="listed twice"):
        run_rows([_row("square", 1, x=1), _row("square", 1, x=2)], store, log=lambda s: None)
    with pytest.raises(ValueError, match="not 'package.module:function'"):
        run_rows([Row({"a": "b"}, "nofunction")], store, log=lambda s: None)
    with pytest.raises(ValueError, match="cannot be imported"):
        run_rows([Row({"a": "b"}, f"{FIX}:missing")], store, log=lambda s: None)
    with pytest.raises(ValueError, match="the result file uses itself"):
        store.write(_row("square", 1, x=1), {"key": 1})
