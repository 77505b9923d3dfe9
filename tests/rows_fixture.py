"""Row functions for tests/test_rows.py, importable by spawned workers and submitit jobs (tests/ is on their
sys.path: pytest puts it on the parent's, spawn copies the parent's, the submitit test adds it to PYTHONPATH)."""
import os
import time
from pathlib import Path


def square(x: int, delay: float = 0.0) -> dict:
    """A row's result: x squared, and the process that computed it."""
    time.sleep(delay)
    return {"value": x * x, "pid": os.getpid()}


def fail_if(x: int, bad: int, delay: float = 0.0) -> dict:
    """A row that raises (a two-line message) for x == bad."""
    time.sleep(delay)
    if x == bad:
        raise ValueError(f"row {x} is broken\non two lines")
    return {"value": x * x, "pid": os.getpid()}


def killed_on_second_call(x: int, calls: str) -> dict:
    """Counts its calls in the folder ``calls``; the second call ever "kills" the run (KeyboardInterrupt, as
    Ctrl-C or a scheduler's signal would) before returning, every other call succeeds."""
    n = len(os.listdir(calls))
    Path(calls, f"call{n}_x{x}").touch()
    if n == 1:
        raise KeyboardInterrupt
    return {"value": x * x}


def hangs_on_second_call(x: int, calls: str) -> dict:
    """Like ``killed_on_second_call``, but the second call hangs (for a real SIGKILL from the test)."""
    n = len(os.listdir(calls))
    Path(calls, f"call{n}_x{x}").touch()
    if n == 1:
        time.sleep(120)
    return {"value": x * x}


def torch_threads(delay: float = 0.0) -> dict:
    """The worker's torch threads and process id."""
    import torch
    time.sleep(delay)
    return {"threads": torch.get_num_threads(), "pid": os.getpid()}


def not_json() -> dict:
    """A result that pickles but is not JSON (a set)."""
    return {"value": {1, 2}}
