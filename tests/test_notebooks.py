"""Every notebooks/*.ipynb runs headless, top to bottom, in SMALL mode; plus the zero-cost benchmark script.

Notebooks run in a fresh ``python3`` kernel of this interpreter (the venv), with their own folder as
working directory (as Jupyter does), ``ZEROI2V_NB_SMALL=1`` and ``MPLBACKEND=Agg``. A cell that
raises fails the test named after the notebook; the partly executed notebook is written to
``test-artifacts/notebooks/`` for a look at what happened.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
OURS = ("01_stdha.ipynb", "02_adapters_and_merge.ipynb", "04_train_zeroi2v.ipynb")
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell; SMALL notebooks take about a minute in all on 2 cores
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
VENV_JUPYTER = Path(sys.prefix) / "share" / "jupyter"


@pytest.fixture(scope="session")
def python3_kernel():
    """Make sure a ``python3`` kernel spec exists for this interpreter; install one into the venv if not."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL],
                       check=True, capture_output=True, text=True)
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    return spec


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    """What the kernel inherits: SMALL mode, a headless matplotlib, the venv's kernel specs first."""
    monkeypatch.setenv("ZEROI2V_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet debugger warning in kernel stderr
    # A user-level python3 spec (~/.local/share/jupyter) pointing at another Python would shadow the
    # venv's; JUPYTER_PATH is searched first.
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(VENV_JUPYTER), os.environ.get("JUPYTER_PATH")])))
    return tmp_path


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL, allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


def test_notebooks_are_found():
    names = {p.name for p in NOTEBOOKS}
    assert set(OURS) <= names, f"expected {OURS} in {NB_DIR}, found {sorted(names)}"


def test_kernel_runs_this_venv(python3_kernel, kernel_env):
    """The python3 kernel is this interpreter (the venv), and it sees the environment we set."""
    probe = new_notebook(cells=[new_code_cell(
        "import json, os, sys\n"
        "print(json.dumps({'prefix': sys.prefix, 'executable': sys.executable, 'cwd': os.getcwd(),\n"
        "                  'small': os.environ.get('ZEROI2V_NB_SMALL'), 'mpl': os.environ.get('MPLBACKEND')}))")])
    out = json.loads(_stdout(_execute(probe, kernel_env).cells[0]).strip().splitlines()[-1])
    assert Path(out["prefix"]).resolve() == Path(sys.prefix).resolve(), (
        f"the python3 kernel runs {out['executable']} (prefix {out['prefix']}), not this venv ({sys.prefix}); "
        f"reinstall it: {sys.executable} -m ipykernel install --sys-prefix --name python3")
    assert Path(out["executable"]).absolute().parent == Path(sys.executable).absolute().parent, out["executable"]
    assert out["small"] == "1" and out["mpl"] == "Agg"
    assert Path(out["cwd"]).resolve() == kernel_env.resolve()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_headless(path, python3_kernel, kernel_env):
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    try:
        _execute(nb, path.parent)
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / path.name)
        raise
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors  # allow_errors=False raises first; this guards a cell tagged raises-exception


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path):
    """Notebooks live in git without outputs (small diffs, no stale numbers, no embedded images)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


def test_generated_notebooks_match_their_source():
    """notebooks/_build.py writes 01 and 02; an edit made to the .ipynb alone would be lost on the next build."""
    build = NB_DIR / "_build.py"
    proc = subprocess.run([sys.executable, str(build), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zero_cost_benchmark_script(tmp_path):
    """benchmarks/zero_cost.py on a tiny backbone: table, JSON, exact merge, equal FLOPs."""
    out = tmp_path / "zero_cost.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "zero_cost.py"), "--backbone", "zeroi2v-micro",
                           "--frames", "4", "--repeats", "2", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: merged / plain" in proc.stdout and "ZeroI2V merged" in proc.stdout
    r = json.loads(out.read_text())
    assert r["gflops"]["merged"] == r["gflops"]["plain"] < r["gflops"]["unmerged"]
    assert r["params"]["merged"] == r["params"]["plain"] + r["params"]["temporal_embedding"] + r["params"]["classifier"]
    assert r["merge_max_abs_logit_diff"] <= 1e-4
    assert set(r["latency_ratio"]) == {"plain", "unmerged", "merged"} and r["latency_ratio"]["plain"] == 1.0
    assert r["verdict"]["pass"] == (r["latency_ratio"]["merged"] <= 1.02)
