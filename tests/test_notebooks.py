"""Tutorial notebooks: each ``notebooks/NN_name.py`` (jupytext percent format, the source) is in sync with
its ``.ipynb`` (committed without outputs); every notebook runs headless, top to bottom, in SMALL mode;
plus the zero-cost benchmark script.

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

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
SOURCES = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))  # the tutorials' sources; each pairs with its .ipynb
PAIRS = sorted({p.stem for p in SOURCES} | {p.stem for p in NOTEBOOKS})  # NN_name, from either side
OURS = ("01_stdha", "02_adapters_and_merge", "03_video_data", "04_train_zeroi2v", "05_explain_gradcam",
        "06_fewshot_vidtab", "07_ablations", "08_efficiency")
PAIRING = "ipynb,py:percent"
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


def _rel(path: Path) -> str:
    return path.relative_to(path.parents[1]).as_posix()  # notebooks/NN_name.py, wherever the folder is


def _regenerate(py: Path) -> str:
    return (f"the .py is the source: jupytext --update --to ipynb {_rel(py)} "
            f"(an edit made in the .ipynb: first jupytext --to py:percent {_rel(py.with_suffix('.ipynb'))})")


def _sync_problem(py: Path, ipynb: Path) -> str | None:
    """Why the pair (py, ipynb) is not in sync, or None: both declare the pairing, same cell types, sources
    and tags. Outputs, ids and other metadata are not compared (Jupyter and jupytext write those)."""
    if not py.is_file():
        return f"{_rel(ipynb)} has no source {py.name}: jupytext --set-formats {PAIRING} {_rel(ipynb)}"
    if not ipynb.is_file():
        return f"{_rel(py)} has no {ipynb.name}: jupytext --to ipynb {_rel(py)}"
    text, nb = jupytext.read(py), nbformat.read(ipynb, as_version=4)
    meta = text.metadata.get("jupytext", {})
    if meta.get("text_representation", {}).get("format_name") != "percent" or meta.get("formats") != PAIRING:
        return (f"{_rel(py)}: its jupytext header must declare percent format paired with the notebook; "
                f"run: jupytext --set-formats {PAIRING} {_rel(py)}")
    if nb.metadata.get("jupytext", {}).get("formats") != PAIRING:
        return f"{_rel(ipynb)} does not declare the pairing {PAIRING!r}; {_regenerate(py)}"

    def cells(book):
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in book.cells]

    want, got = cells(text), cells(nb)
    for i, (w, g) in enumerate(zip(want, got)):
        if w != g:
            what = "type" if w[0] != g[0] else "source" if w[1] != g[1] else "tags"
            return f"{_rel(ipynb)} is out of sync with {py.name}: cell {i} differs ({what}); {_regenerate(py)}"
    if len(want) != len(got):
        return (f"{_rel(ipynb)} is out of sync with {py.name}: {len(got)} cells, the source has {len(want)}; "
                f"{_regenerate(py)}")
    return None


def _cells_with_outputs(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]


def test_notebooks_are_found():
    """Every tutorial is a pair: each NN_name.py has its .ipynb and each .ipynb its .py."""
    py, ipynb = {p.stem for p in SOURCES}, {p.stem for p in NOTEBOOKS}
    assert set(OURS) <= py, f"expected sources {OURS} in {NB_DIR}, found {sorted(py)}"
    assert py == ipynb, (f"unpaired: {sorted(py - ipynb)} have no .ipynb, {sorted(ipynb - py)} no NN_name.py; "
                         f"see notebooks/README.md")


@pytest.mark.parametrize("stem", PAIRS)
def test_notebook_in_sync_with_its_source(stem):
    """The .py is the source; an edit made to one file of a pair alone fails here."""
    problem = _sync_problem(NB_DIR / f"{stem}.py", NB_DIR / f"{stem}.ipynb")
    assert problem is None, problem


def test_sync_check_catches_edits(tmp_path):
    """The checks above can fail: a copied pair is in sync until one side is edited or gets outputs."""
    src = SOURCES[0]
    py, ipynb = tmp_path / "notebooks" / src.name, tmp_path / "notebooks" / f"{src.stem}.ipynb"
    py.parent.mkdir()
    py.write_text(src.read_text())
    ipynb.write_text(src.with_suffix(".ipynb").read_text())
    assert _sync_problem(py, ipynb) is None
    original = py.read_text()
    lines = original.splitlines(keepends=True)
    first_code = lines.index("# %%\n") + 1  # an edit inside a code cell of the .py
    lines[first_code] = lines[first_code].rstrip("\n") + "  # edited\n"
    py.write_text("".join(lines))
    problem = _sync_problem(py, ipynb)
    assert problem and "differs (source)" in problem and f"--to ipynb notebooks/{py.name}" in problem, problem
    py.write_text(original + "\n# %%\nprint('a cell only in the .py')\n")  # a cell added to the .py
    assert "cells, the source has" in (_sync_problem(py, ipynb) or ""), _sync_problem(py, ipynb)
    py.write_text(original.replace(f"formats: {PAIRING}", "formats: ipynb,py:light", 1))
    assert "--set-formats" in (_sync_problem(py, ipynb) or ""), _sync_problem(py, ipynb)
    py.write_text(original)
    nb = nbformat.read(ipynb, as_version=4)
    clean = nbformat.writes(nb)
    nb.cells[0].source += "\nAn edit made in Jupyter to the .ipynb alone."
    nbformat.write(nb, ipynb)
    assert "cell 0 differs (source)" in (_sync_problem(py, ipynb) or ""), _sync_problem(py, ipynb)
    nb = nbformat.reads(clean, as_version=4)
    code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[code].outputs, nb.cells[code].execution_count = [new_output("stream", text="hi\n")], 1
    nbformat.write(nb, ipynb)  # outputs are no sync problem, but they are caught before a commit
    assert _sync_problem(py, ipynb) is None and _cells_with_outputs(nbformat.read(ipynb, as_version=4)) == [code]
    py.unlink()
    assert "has no source" in (_sync_problem(py, ipynb) or "")


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
    stale = [i for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if "old flat form" in o.get("text", "")]
    assert not stale, f"{path.name}: cells {stale} use the old flat model keys; write model.temporal / model.adapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path):
    """Notebooks live in git without outputs (small diffs, no stale numbers, no embedded images)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = _cells_with_outputs(nb)
    assert not dirty, (f"{path.name}: cells {dirty} have outputs; clear them before committing: "
                       f"jupyter nbconvert --clear-output --inplace {_rel(path)}")


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
