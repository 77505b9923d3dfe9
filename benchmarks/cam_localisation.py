"""Where the Grad-CAM maps point (issue 11, item 8): CAM mass inside the moving object's box, per CAM
method, per block and per head group, over the test clips of a quickstart's synthetic set.

Each clip: one uniform 8-frame view through ``zeroi2v.data.views.model_views`` (the demo's input path),
explained for the model's top prediction (as the demo does) with every method of
``zeroi2v.explain.CAM_METHODS`` on the per-head values of each block (``zeroi2v.explain.localisation``).
A figure is the mean over clips of the fraction of the map's mass inside the object's box; "x" is that
over chance (box area / frame area, what a uniform map scores). ``oracle`` is the best a token-grid map
can score: each patch weighted by the share of it the box covers, upsampled like the CAMs; it bounds
what any method can reach at 4 x 4 patches.

Measured on the quickstart model of /work/qs-base (zeroi2v-tiny: 32 px, 8-px patches = 4 x 4 tokens,
4 blocks, 8 heads, Δt {1x2,-1x2}), all 300 test clips, 2 shared CPU cores (spatial / temporal heads,
x chance 0.0957; block 3 is the last, the demo's default):

    method                block 3        block 2        block 1        block 0
    (filled in below from the run)

    .venv/bin/python benchmarks/cam_localisation.py --run /work/qs-base
    .venv/bin/python benchmarks/cam_localisation.py --run runs/quickstart --clips 100 --methods gradcam,gradcam-elementwise
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zeroi2v.explain import CAM_METHODS, box_clips, localisation, mass_in_boxes, upsample, _box_masks  # noqa: E402
from zeroi2v.merge import load_merged  # noqa: E402


def oracle(clips, grid: tuple[int, int]) -> float:
    """Mass in box of the ideal token-grid map (patch weight = box coverage), upsampled like a CAM."""
    scores = []
    for view, boxes in clips:
        hw = tuple(view.shape[-2:])
        masks, _ = _box_masks(boxes, hw)
        ph, pw = hw[0] // grid[0], hw[1] // grid[1]
        cover = masks.reshape(len(masks), grid[0], ph, grid[1], pw).mean(axis=(2, 4)).astype(np.float32)
        scores.append(mass_in_boxes(upsample(cover, hw), boxes))
    return float(np.nanmean(scores))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/quickstart", help="quickstart output folder (merged/ and videos/)")
    p.add_argument("--clips", type=int, default=0, help="evenly spaced test clips (0: all)")
    p.add_argument("--methods", default=",".join(CAM_METHODS))
    p.add_argument("--blocks", default="", help="comma-separated block indices (default: all, last first)")
    p.add_argument("--out", default="", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    run = Path(args.run)
    model = load_merged(run / "merged").eval()
    meta = json.loads((run / "videos" / "test_meta.json").read_text())
    if args.clips:
        meta = meta[::max(1, len(meta) // args.clips)][:args.clips]
    clips = box_clips(model, run / "videos", meta)
    n = len(model.blocks)
    blocks = [int(b) % n for b in args.blocks.split(",")] if args.blocks else list(range(n - 1, -1, -1))
    methods = args.methods.split(",")
    results: dict = {"clips": len(clips), "blocks": blocks, "oracle": oracle(clips, model.family.grid(model.visual))}
    for method in methods:
        for b in blocks:
            t0 = time.perf_counter()
            r = localisation(model, clips, method=method, block=b)
            r["seconds"] = round(time.perf_counter() - t0, 1)
            results[f"{method}@{b}"] = r
            print(f"{method:20s} block {b}: spatial {r['spatial_mass_in_box']}  temporal "
                  f"{r['temporal_mass_in_box']}  chance {r['chance']}  ({r['seconds']} s)", flush=True)
    chance = next(v["chance"] for k, v in results.items() if "@" in k)
    print(f"\n{len(clips)} clips, chance {chance:.4f}, token-grid oracle {results['oracle']:.3f} "
          f"({results['oracle'] / chance:.1f}x); spatial / temporal mass in box (x chance)")
    print(f"{'method':22s}" + "".join(f"{'block ' + str(b):>22s}" for b in blocks))
    for method in methods:
        cells = []
        for b in blocks:
            r = results[f"{method}@{b}"]
            s, t = r["spatial_mass_in_box"], r["temporal_mass_in_box"]
            cells.append(f"{s:.3f} / {t:.3f} ({s / chance:.1f}/{t / chance:.1f}x)" if s is not None and t is not None
                         else "n/a")
        print(f"{method:22s}" + "".join(f"{c:>22s}" for c in cells))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
