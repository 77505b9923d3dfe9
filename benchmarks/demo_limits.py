"""The demo under hostile uploads (issue 9, D2 and D3): peak memory per upload, and how long a normal
clip waits behind the worst allowed upload.

Generated inputs (cached in --out, so "before" and "after" runs read the same files):
- ``big40.mp4``: 4096 x 4096 pixels, 40 frames, flat grey with a moving square (about 100 KB);
- ``thin.mp4``: 2 x 4096 pixels (H x W), 40 frames;
- ``long900.mp4``: 4096 x 4096, 900 frames at 30 fps (about 2 min to encode on one core): the
  issue's 900-frame upload, and the largest the default limits still accept at 5 views;
- ``normal.mp4``: 320 x 240, 64 frames at 30 fps, a moving square;
- two merged checkpoints: the 32-px ``zeroi2v-micro`` model and the same tower at 224 px (patch 32).

Memory: each case runs ``DemoBackend(ckpt).analyse(file, clips=5)`` in a fresh subprocess and reports
the peak RSS during the analysis (VmHWM, restarted after start-up and warm-up through
/proc/self/clear_refs), also as the rise above the RSS before it.
Wait: one subprocess serves the demo on 127.0.0.1 (``launch(..., threads=1)``); one client uploads
``long900.mp4`` at 5 views, another uploads ``normal.mp4`` at 1 view 1 s later; the normal clip's
wall time from its submission to its result is its wait (compared with the same clip alone).

``--code DIR`` runs the subprocesses on another checkout (an older one for "before" figures);
the files are always generated with this checkout's code.

Measured on 2 shared CPU cores (peak RSS during the analysis / its rise above the RSS before it):

    upload @ model, 5 views     before issue 9          after
    big40 @ 32 px               5591 MB / +4660 MB      1027 MB / +99 MB   (same top-1)
    big40 @ 224 px              5741 MB / +4794 MB      1115 MB / +173 MB  (same top-1)
    thin @ 224 px               3355 MB / +2409 MB      971 MB / +25 MB    (refused: frame area)
    normal clip alone           0.40 s                  0.25 s
    ... 1 s after long900       21.50 s                 0.32 s
    long900 itself              22.5 s                  11.5 s

    .venv/bin/python benchmarks/demo_limits.py --out runs/bench/demo_limits
    .venv/bin/python benchmarks/demo_limits.py --out runs/bench/demo_limits --code /path/to/old/checkout
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def hostile_frames(num_frames: int, height: int, width: int, square: int = 256):
    """Flat grey frames with a moving bright square: tiny to encode and to store, huge to decode."""
    frame = np.full((height, width, 3), 96, np.uint8)
    side = min(square, height, width)
    for i in range(num_frames):
        x = (8 * i) % max(1, width - side)
        frame[:side, x:x + side] = (230, 120, 30)
        yield frame
        frame[:side, x:x + side] = 96


def make_inputs(out: Path) -> dict[str, Path]:
    from zeroi2v.backbones import build_visual, get_model_config, save_local_dir
    from zeroi2v.data.decode import write_video
    from zeroi2v.merge import merge_adapters, save_merged
    from zeroi2v.model import create_model

    out.mkdir(parents=True, exist_ok=True)
    fast = {"preset": "ultrafast", "crf": 30}
    videos = {"big40": (40, 4096, 4096, 8), "thin": (40, 2, 4096, 8), "long900": (900, 4096, 4096, 30)}
    paths = {}
    for name, (t, h, w, fps) in videos.items():
        paths[name] = out / f"{name}.mp4"
        if not paths[name].is_file():
            print(f"writing {paths[name]} ({t} frames of {w}x{h}) ...", flush=True)
            write_video(paths[name], hostile_frames(t, h, w), fps=fps, **fast)  # whole or not at all
    paths["normal"] = out / "normal.mp4"
    if not paths["normal"].is_file():
        write_video(paths["normal"], np.stack(list(f.copy() for f in hostile_frames(64, 240, 320, square=48))), fps=30)
    classes = [f"class {i}" for i in range(6)]
    for size in (32, 224):
        paths[f"ckpt{size}"] = out / f"merged{size}"
        if (paths[f"ckpt{size}"] / "config.json").is_file():
            continue
        cfg = get_model_config("zeroi2v-micro")
        if size != 32:
            cfg["vision_cfg"].update(image_size=size, patch_size=32)
        backbone = save_local_dir(build_visual(cfg), cfg, out / f"tower{size}")
        model = create_model(backbone=backbone, num_classes=6, num_frames=8, offsets="1x1,-1x1,0x4",
                             class_names=classes)
        save_merged(merge_adapters(model), paths[f"ckpt{size}"], extra={"class_names": classes})
    return paths


MEMORY_CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {code!r})
try:  # this checkout (the demo in the package); --code may name one from before it moved
    from zeroi2v.demo import DemoBackend, InputError
except ImportError:
    from app.app import DemoBackend, InputError

def status(key):  # kB -> MB, from /proc/self/status
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024

backend = DemoBackend({ckpt!r}, warmup=True)
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from here
    f.write("5")
start = time.perf_counter()
try:
    r = backend.analyse({video!r}, clips={clips})
    outcome = "analysed: top-1 class " + str(r["target_class"])
except InputError as e:
    outcome = "refused: " + str(e)
seconds = time.perf_counter() - start
print(json.dumps({{"base_mb": base, "peak_mb": status("VmHWM"), "process_peak_mb":
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds, "outcome": outcome}}))
"""

WAIT_CHILD = """
import json, sys, threading, time
sys.path.insert(0, {code!r})
try:  # this checkout (the demo in the package); --code may name one from before it moved
    from zeroi2v.demo import launch
except ImportError:
    from app.app import launch
from gradio_client import Client, handle_file
demo = launch({ckpt!r}, host="127.0.0.1", port={port}, prevent_thread_lock=True, quiet=True, threads=1)
url = "http://127.0.0.1:{port}"
names = Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
api = "/analyse" if "/analyse" in names else "/run_2"  # the Analyse button (named /run_2 before issue 9)

def call(video, clips, out):
    client = Client(url, verbose=False, download_files=False)
    start = time.perf_counter()
    status = client.predict(handle_file(video), None, "Top-1 prediction", 1, clips, api_name=api)[0]
    out.update(seconds=time.perf_counter() - start, status=status[:200])

alone = {{}}
for _ in range(3):  # warm-up, then the last one counts
    call({normal!r}, 1, alone)
big, normal = {{}}, {{}}
worker = threading.Thread(target=call, args=({big!r}, 5, big))
worker.start()
time.sleep(1.0)
call({normal!r}, 1, normal)
worker.join()
demo.close()
print(json.dumps({{"alone": alone, "behind_big": normal, "big": big, "api": api}}))
"""


def child(code: str, env_code: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(env_code), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--out", default="runs/bench/demo_limits", help="where the generated inputs are cached")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose app.app and zeroi2v the subprocesses run")
    ap.add_argument("--skip", nargs="*", default=[], choices=["memory", "wait"])
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    paths = make_inputs(Path(a.out))
    code = Path(a.code).resolve()
    report = {"code": str(code), "cpu_count": os.cpu_count(), "memory": {}, "wait": None}
    print(f"code: {code}   cores: {os.cpu_count()}")
    if "memory" not in a.skip:
        cases = [("big40", 32), ("big40", 224), ("thin", 224)]
        print(f"{'upload':>8} {'model':>6} {'views':>5} {'peak MB':>8} {'+MB':>7} {'s':>6}  outcome")
        for video, size in cases:
            r = child(MEMORY_CHILD.format(code=str(code), ckpt=str(paths[f"ckpt{size}"]), video=str(paths[video]),
                                          clips=5), code)
            report["memory"][f"{video}@{size}px"] = r
            print(f"{video:>8} {size:>4}px {5:>5} {r['peak_mb']:8.0f} {r['peak_mb'] - r['base_mb']:7.0f} "
                  f"{r['seconds']:6.1f}  {r['outcome'][:110]}", flush=True)
    if "wait" not in a.skip:
        r = child(WAIT_CHILD.format(code=str(code), ckpt=str(paths["ckpt32"]), port=free_port(),
                                    normal=str(paths["normal"]), big=str(paths["long900"])), code)
        report["wait"] = r
        print(f"normal clip alone: {r['alone']['seconds']:.2f} s; submitted 1 s after long900.mp4 (5 views): "
              f"{r['behind_big']['seconds']:.2f} s ({r['behind_big']['status'][:60]}...)")
        print(f"long900.mp4 (5 views): {r['big']['seconds']:.1f} s: {r['big']['status'][:160]}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
