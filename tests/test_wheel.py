"""The package as a user installs it: a wheel built from the repository, installed into a fresh venv and run
outside the checkout, gives `zeroi2v --help`, `zeroi2v predict` and `zeroi2v demo` (HTTP 200 on 127.0.0.1).

The fresh venv gets the pinned stack by a path file pointing at this interpreter's site-packages (the
pinned requirements, several GB, are not installed twice); its own site-packages comes first, so
``zeroi2v`` is the wheel's copy, which the test checks, never the checkout's.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "merged_v1"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy of what git tracks: the build writes build/ and *.egg-info beside its sources
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    wheel = next((tmp / "dist").glob("zeroi2v-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "pinned_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-compile", str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONNOUSERSITE="1")
    where = tmp / "elsewhere"
    where.mkdir()
    return venv, env, where


def _run(installed, *args, timeout=300):
    """``args[0]`` is 'python' or 'zeroi2v' (the wheel's entry point), run from the venv outside the checkout."""
    venv, env, where = installed
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=where, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_wheel_is_what_runs(installed):
    venv, _, _ = installed
    out = _run(installed, "python", "-c", "import zeroi2v, zeroi2v.demo; print(zeroi2v.__file__)")
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(venv) and not Path(out.stdout.strip()).is_relative_to(ROOT)


def test_help_and_predict_outside_the_checkout(installed, tmp_path):
    out = _run(installed, "zeroi2v", "--help")
    assert out.returncode == 0 and "predict" in out.stdout and "demo" in out.stdout, out.stderr
    from zeroi2v.data.decode import write_video
    video = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    write_video(video, rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    out = _run(installed, "zeroi2v", "predict", "--checkpoint", str(FIXTURE), "--json", str(video))
    assert out.returncode == 0, out.stderr
    assert '"class": "left"' in out.stdout or '"class": "right"' in out.stdout or '"class": "still"' in out.stdout


def test_the_packaged_recipe_base_resolves_outside_the_checkout(installed, tmp_path):
    """`init` writes `base: zeroi2v:configs/base/...`: that base must be inside the wheel."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: zeroi2v:configs/base/clip_vit_b16.yaml\noptim: {lr: 1.0e-4}\n")
    out = _run(installed, "zeroi2v", "config", "show", str(mine))
    assert out.returncode == 0, out.stderr
    assert "lr: 0.0001" in out.stdout and "backbone: ViT-B-16" in out.stdout and "randaugment" in out.stdout


def test_demo_serves_http_200_on_localhost(installed):
    venv, env, where = installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(venv / "bin" / "zeroi2v"), "demo", "--checkpoint", str(FIXTURE),
                             "--port", str(port)], cwd=where, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(1)
        assert status == 200, proc.stdout.read() if proc.poll() is not None else f"no answer on port {port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
