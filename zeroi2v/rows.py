"""Result rows: a list of independent runs, each written as one JSON file when it ends, resumable.

A study (the few-shot benchmark's (task, shots, fold, method) grid, an ablation grid's (row, seed) pairs) is a
list of rows: a function (``"package.module:function"``, called as ``fn(**kwargs)``, returning a dict of
JSON-able results) and a ``config_hash`` of what defines its result. This is the one-JSON-per-run approach of
LAION's CLIP_benchmark, whose ``build`` step then tabulates the files.

- **Storing.** ``ResultStore(folder)`` keeps ``folder/rows/<row.id>.json`` (key, config hash, the result's
  fields, ``seconds``, ``finished_at``), written atomically when the row ends: a killed run costs at most the
  row(s) in flight. A rerun skips every row whose file has the same config hash, and a key always maps to the
  same file (no row is stored twice); a finished row with *another* hash is refused before anything runs.
- **Failures.** A row that raises is logged in one line (row id + message), nothing is written for it and the
  others go on; ``RunSummary.failed`` lists them (the CLI exits non-zero) and a rerun retries them.
- **Several processes** (``workers > 1``): a ``spawn`` pool (safe with CUDA; a script calling this needs the
  ``if __name__ == "__main__":`` guard), rows handed out one at a time, results written by the parent as they
  arrive. With CUDA each worker sees one GPU (``CUDA_VISIBLE_DEVICES``, round-robin over the visible ones); on
  CPU each gets ``max(1, cores // workers)`` torch threads. Ctrl-C stops the workers.
- **Slurm** (``launcher="submitit"``): one job per pending row through submitit (optional:
  ``pip install 'zeroi2v[slurm]'``); each job writes its own row's file with the same ``ResultStore.write``.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from zeroi2v.files import atomic_write_text, read_json

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*(?:_[A-Za-z0-9.+-]+)*")  # an id part that reads back as itself
_MAX_ID = 150
BOOKKEEPING = ("id", "key", "config_hash", "finished_at")  # written by the store; a result must not carry them


def config_hash(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces), first 12 hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Row:
    """One run: ``fn(**kwargs)`` returns its result dict; ``key`` (ordered JSON scalars) names it."""

    key: dict[str, Any]
    """What the row is, e.g. ``{"task": "AR_in_Dark", "shots": 4, "fold": 1, "method": "zeroi2v"}``."""
    fn: str
    """``"package.module:function"``, imported where the row runs (this process, a worker, a Slurm job)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """The function's keyword arguments (JSON-able: they travel to workers and jobs)."""
    config_hash: str = ""
    """Hash of what defines the row's result (``config_hash(...)``): a finished row with another hash is refused."""

    @property
    def id(self) -> str:
        """Readable and filename-safe: string values as they are, other values as ``<name><value>``, joined by
        ``__`` ("AR_in_Dark__shots4__fold1__zeroi2v"). When a value had to be changed to be safe (or could read
        as another key's), a short hash of the whole key is appended, so two keys never share an id."""
        parts, exact = [], True
        for name, value in self.key.items():
            text = value if isinstance(value, str) else f"{name}{json.dumps(value)}"
            # exact: the part reads back as this value only ("fold1" as a string could read as fold=1)
            exact &= bool(_SAFE.fullmatch(text)) and (not isinstance(value, str) or not any(
                value.startswith(str(k)) for k in self.key))
            safe = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_.+-")) or "x"
            parts.append(safe)
        rid = "__".join(parts) or "row"
        if not exact or len(rid) > _MAX_ID:
            rid = f"{rid[:_MAX_ID]}__{config_hash(list(self.key.items()))[:8]}"
        return rid


@dataclass
class RunSummary:
    """What ``run_rows`` did: rows run now, rows finished earlier, and the failures (row id, message)."""
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


class ResultStore:
    """Finished rows as ``folder/rows/<row.id>.json`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.dir = self.folder / "rows"

    def path(self, row: Row) -> Path:
        return self.dir / f"{row.id}.json"

    def done(self, row: Row) -> dict | None:
        """The finished row's record, or None. A file of another key or another config hash is an error."""
        path = self.path(row)
        if not path.is_file():
            return None
        record = read_json(path)
        if not isinstance(record, dict) or record.get("key") != row.key:
            raise ValueError(f"{path}: holds the result of key {record.get('key') if isinstance(record, dict) else '?'}"
                             f", not {row.key}; move it away or use a new output folder")
        if record.get("config_hash") != row.config_hash:
            raise ValueError(f"{path}: this row finished with config hash {record.get('config_hash')}, but the "
                             f"settings now give {row.config_hash}; write to a new --out folder, or delete that "
                             f"file to rerun the row with the new settings")
        return record

    def write(self, row: Row, result: dict, seconds: float | None = None) -> Path:
        """Write the row's record atomically: key, config hash, the result's fields, ``seconds`` (the result's
        own, else the measured wall time) and ``finished_at`` (UTC)."""
        clash = [k for k in BOOKKEEPING if k in result]
        if clash:
            raise ValueError(f"row {row.id}: {row.fn} returned the field(s) {clash}, which the result file uses "
                             f"itself; rename them in the function's result")
        record = {"id": row.id, "key": row.key, "config_hash": row.config_hash, **result}
        if seconds is not None:
            record.setdefault("seconds", round(seconds, 3))
        record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        path = self.path(row)
        old = read_json(path) if path.is_file() else None
        if isinstance(old, dict) and old.get("key") != row.key:
            raise ValueError(f"{path}: already holds key {old.get('key')}, not {row.key}; use a new output folder")
        return atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")

    def rows(self) -> list[dict]:
        """Every finished row's record, in file-name order."""
        return [read_json(p) for p in sorted(self.dir.glob("*.json"))]


def resolve(fn: str) -> Callable[..., dict]:
    """The function ``"package.module:function"`` names (imported now)."""
    module, _, name = fn.partition(":")
    if not module or not name:
        raise ValueError(f"row function {fn!r} is not 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"row function {fn!r} cannot be imported ({e}); check the name and that its package "
                         f"is importable (installed, or on PYTHONPATH)") from None


def _call(fn: str, kwargs: dict) -> tuple[dict, float]:
    """Run one row: its result and wall time. The result must be a dict."""
    start = time.perf_counter()
    result = resolve(fn)(**kwargs)
    if not isinstance(result, dict):
        raise TypeError(f"{fn} returned {type(result).__name__}, not a dict of results")
    return result, time.perf_counter() - start


def _message(e: BaseException) -> str:
    """An exception in one line."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_rows(rows: list[Row], store: ResultStore, workers: int = 1, launcher: str = "local",
             launcher_options: dict | None = None, log: Callable[[str], Any] = print,
             describe: Callable[[dict], str] | None = None) -> RunSummary:
    """Run the rows not finished in ``store``, writing each result as its row ends (see the module docstring).

    ``launcher``: "local" (this process when ``workers == 1``, else a pool of ``workers`` processes) or
    "submitit" (one job per row; ``launcher_options`` go to ``update_parameters``, plus ``cluster``: "slurm"
    (default) or "local"). ``describe(result)`` gives the text shown after a row's time, e.g. "top1 0.41".
    Every finished row is checked (key, config hash) before anything runs.
    """
    if launcher not in ("local", "submitit"):
        raise ValueError(f"unknown launcher {launcher!r}: use 'local' or 'submitit'")
    dup = [i for i, n in Counter(r.id for r in rows).items() if n > 1]
    if dup:
        raise ValueError(f"rows listed twice: {dup[:5]}; each key must appear once")
    for fn in dict.fromkeys(r.fn for r in rows):
        resolve(fn)  # a typo fails here, before any worker or job starts
    pending = [r for r in rows if store.done(r) is None]
    summary = RunSummary(skipped=len(rows) - len(pending))
    log(f"[rows] {len(rows)} rows in {store.dir}: {summary.skipped} finished earlier, {len(pending)} to run")
    if not pending:
        return summary
    report = _Reporter(len(pending), summary, log, describe)
    if launcher == "submitit":
        _run_submitit(pending, store, dict(launcher_options or {}), report)
    elif workers <= 1:
        _run_serial(pending, store, report)
    else:
        _run_pool(pending, store, workers, report)
    log(f"[rows] {summary.done} done, {summary.skipped} skipped, {len(summary.failed)} failed"
        + (f": {', '.join(i for i, _ in summary.failed)}" if summary.failed else ""))
    return summary


@dataclass
class _Reporter:
    """The one log line per ended row, and the summary's counts."""
    total: int
    summary: RunSummary
    log: Callable[[str], Any]
    describe: Callable[[dict], str] | None
    ended: int = 0

    def ok(self, row: Row, result: dict, seconds: float) -> None:
        self.ended += 1
        self.summary.done += 1
        try:  # a display helper never stops the run
            extra = f" ({self.describe(result)})" if self.describe else ""
        except Exception:  # noqa: BLE001
            extra = ""
        self.log(f"[rows] {self.ended}/{self.total} {row.id}: done in {seconds:.1f} s{extra}")

    def failed(self, row: Row, message: str) -> None:
        self.ended += 1
        self.summary.failed.append((row.id, message))
        self.log(f"[rows] {self.ended}/{self.total} {row.id}: FAILED: {message}")


def _run_serial(pending: list[Row], store: ResultStore, report: _Reporter) -> None:
    for row in pending:
        try:
            result, seconds = _call(row.fn, row.kwargs)
        except KeyboardInterrupt:
            report.log(f"[rows] interrupted during {row.id} (not written); rerun the same command to go on")
            raise
        except Exception as e:  # noqa: BLE001 - a failing row is reported, the others go on
            report.failed(row, _message(e))
            continue
        _finish(row, result, seconds, store, report)


def _finish(row: Row, result: dict, seconds: float, store: ResultStore, report: _Reporter) -> None:
    """Write a row's result; a result that cannot be written (not JSON-able ...) fails that row only."""
    try:
        store.write(row, result, seconds)
    except (TypeError, ValueError) as e:
        report.failed(row, f"its result cannot be written: {_message(e)}")
        return
    report.ok(row, result, seconds)


def _visible_gpus() -> list[str]:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES`` entries, else 0..count-1); none without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return []
    env = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return env or [str(i) for i in range(torch.cuda.device_count())]


_THREADS = 0  # in a pool worker on CPU: the torch threads it uses (0: torch's default)


def _init_worker(counter, gpus: list[str], threads: int) -> None:
    """Pool worker start-up: its own GPU (before torch touches CUDA) or its share of the CPU threads (as
    OMP_NUM_THREADS, and set in torch before each row). Ctrl-C is left to the parent, which stops the workers."""
    global _THREADS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        _THREADS = threads


def _pool_call(fn: str, kwargs: dict) -> tuple[str, Any, float]:
    """A row in a worker: ("ok", result, seconds) or ("error", one-line message, seconds)."""
    start = time.perf_counter()
    try:
        resolve(fn)  # imports the row's modules (torch among them, usually) before the threads are set
        torch = sys.modules.get("torch")
        if _THREADS and torch is not None and torch.get_num_threads() != _THREADS:
            torch.set_num_threads(_THREADS)
        result, seconds = _call(fn, kwargs)
        return "ok", result, seconds
    except Exception as e:  # noqa: BLE001 - sent back as text: any exception, picklable or not
        return "error", _message(e), time.perf_counter() - start


_DIED = "a worker process died while this row ran (killed, or out of memory?); rerun to retry it"


def _run_pool(pending: list[Row], store: ResultStore, workers: int, report: _Reporter) -> None:
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    gpus = _visible_gpus()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // workers)
    report.log(f"[rows] {workers} worker processes, " + (f"GPUs {','.join(gpus)} round-robin" if gpus
                                                          else f"{threads} CPU thread(s) each"))
    todo = list(pending)
    while todo:  # a new pool only when a worker died (BrokenProcessPool): its row failed, the rest go on
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(ctx.Value("i", 0), gpus, threads))
        try:
            todo = _drain(pool, todo, store, workers, report)
        except BaseException as e:  # Ctrl-C (or a bug): stop the workers, drop the rows in flight
            if isinstance(e, KeyboardInterrupt):
                report.log("[rows] interrupted: stopping the workers; the rows in flight are not written, "
                           "rerun the same command to go on")
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _drain(pool: ProcessPoolExecutor, todo: list[Row], store: ResultStore, workers: int,
           report: _Reporter) -> list[Row]:
    """Hand rows to the pool one at a time (at most ``workers`` in flight), writing results as they arrive.
    Returns the rows not yet started if the pool broke, else []."""
    todo, running = list(todo), {}
    while todo or running:
        while todo and len(running) < workers:
            row = todo.pop(0)
            running[pool.submit(_pool_call, row.fn, row.kwargs)] = row
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        broken = False
        for future in finished:
            row = running.pop(future)
            try:
                status, value, seconds = future.result()
            except BrokenProcessPool:
                broken = True
                report.failed(row, _DIED)
                continue
            except Exception as e:  # noqa: BLE001 - e.g. a result that cannot be sent back (pickled)
                status, value = "error", _message(e)
            if status == "ok":
                _finish(row, value, seconds, store, report)
            else:
                report.failed(row, value)
        if broken:  # every row in flight is lost with the pool (which one killed it cannot be told)
            for row in running.values():
                report.failed(row, _DIED)
            return todo
    return []


def make_executor(kind: str, folder: str | os.PathLike, options: dict | None = None):
    """A submitit executor: ``kind`` "slurm" (sbatch) or "local" (``submitit.LocalExecutor``: same jobs as
    subprocesses of this machine, for trying a setup), both through ``submitit.AutoExecutor`` so that one set of
    options serves both (``slurm_*`` options are ignored locally). ``options`` go to ``update_parameters``:
    ``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb`` ..."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError("launcher 'submitit' needs the submitit package: pip install submitit, or "
                           "'zeroi2v[slurm]'") from None
    if kind not in ("slurm", "local"):
        raise ValueError(f"submitit cluster {kind!r}: use 'slurm' or 'local'")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    executor.update_parameters(**(options or {}))
    return executor


class RowFailed(RuntimeError):
    """A row's exception in one line, raised by its submitit job (Slurm state FAILED), found by the parent."""


def run_job(row: Row, store_folder: str) -> dict:
    """What one submitit job runs: the row, then its file (written by the job itself, atomically)."""
    try:
        result, seconds = _call(row.fn, row.kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised as one line the parent can find in the trace
        raise RowFailed(_message(e)) from e
    ResultStore(store_folder).write(row, result, seconds)
    return {"seconds": seconds}


def _job_failure(job, e: Exception) -> str:
    """A failed job's reason in one line: the row's own message, else the first line of submitit's."""
    marker = f"{RowFailed.__module__}.{RowFailed.__name__}: "
    found = [ln.split(marker, 1)[1] for ln in str(e).splitlines() if marker in ln]
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return f"job {job.job_id}: " + (found[-1] if found else f"{first} (logs: {job.paths.stdout.parent})")


def _run_submitit(pending: list[Row], store: ResultStore, options: dict, report: _Reporter) -> None:
    kind = options.pop("cluster", "slurm")
    executor = make_executor(kind, store.folder / "slurm", {"name": "zeroi2v-row", **options})
    with executor.batch():
        jobs = [executor.submit(run_job, row, str(store.folder)) for row in pending]
    report.log(f"[rows] {len(jobs)} {kind} job(s) submitted (logs in {store.folder / 'slurm'}): "
               f"{jobs[0].job_id}{' ...' if len(jobs) > 1 else ''}")
    import submitit
    rows = {job.job_id: row for job, row in zip(jobs, pending)}
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=0.5 if kind == "local" else 15):
            row = rows[job.job_id]
            try:
                seconds = job.result()["seconds"]
            except Exception as e:  # noqa: BLE001 - the job's failure, in one line
                report.failed(row, _job_failure(job, e))
                continue
            report.ok(row, store.done(row) or {}, seconds)
    except KeyboardInterrupt:
        report.log(f"[rows] interrupted: the {kind} jobs keep running (cancel them with `scancel`); rerun the "
                   f"same command later to collect them")
        raise
