"""Where the Grad-CAM maps point (issue 11, item 8): CAM mass inside the moving object's box, per CAM
method, per block and per head group, over the test clips of a quickstart's synthetic set.

Each clip: one uniform 8-frame view through ``zeroi2v.data.views.model_views`` (the demo's input path),
explained for the model's top prediction (as the demo does) with every method of
``zeroi2v.explain.CAM_METHODS`` on the per-head values of each block (``zeroi2v.explain.localisation``).
A figure is the mean over clips of the fraction of the map's mass inside the object's box; "x" is that
over chance (box area / frame area, what a uniform map scores). ``oracle`` is the best a token-grid map
can score: each patch weighted by the share of it the box covers, upsampled like the CAMs; it bounds
what any method can reach at 4 x 4 patches.

Measured on the quickstart model of a `make quickstart` run (zeroi2v-tiny: 32 px, 8-px patches = 4 x 4 tokens,
4 blocks, 8 heads, Δt {1x2,-1x2}), all 300 test clips, 2 shared CPU cores (spatial / temporal heads,
x chance 0.0957; block 3 is the last, the demo's default):

    300 clips, chance 0.0957, token-grid oracle 0.474 (5.0x)
    method                  block 3 (last)         block 2                block 1                block 0
    gradcam               0.176/0.167 1.8/1.7x   0.158/0.138 1.7/1.4x   0.115/0.204 1.2/2.1x   0.092/0.086 1.0/0.9x
    gradcam++             0.148/0.161 1.5/1.7x   0.197/0.143 2.1/1.5x   0.172/0.195 1.8/2.0x   0.151/0.122 1.6/1.3x
    xgradcam              0.146/0.146 1.5/1.5x   0.142/0.141 1.5/1.5x   0.135/0.133 1.4/1.4x   0.123/0.120 1.3/1.3x
    layercam              0.220/0.192 2.3/2.0x   0.226/0.172 2.4/1.8x   0.279/0.217 2.9/2.3x   0.228/0.328 2.4/3.4x
    hirescam              0.241/0.208 2.5/2.2x   0.222/0.200 2.3/2.1x   0.232/0.224 2.4/2.3x   0.235/0.302 2.5/3.2x
    gradcam-elementwise   0.270/0.207 2.8/2.2x   0.272/0.214 2.8/2.2x   0.334/0.268 3.5/2.8x   0.363/0.447 3.8/4.7x

The element-wise methods (per-token gradient x activation) beat the channel-weighted ones at every
block; gradcam-elementwise is the default (``zeroi2v.explain.DEFAULT_METHOD``): see that module's
docstring for why. The 4 x 4 token grid is not what holds the maps back (the oracle reaches 5x).

    .venv/bin/python benchmarks/cam_localisation.py --run runs/quickstart
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

from zeroi2v.explain import CAM_METHODS, upsample  # noqa: E402
from zeroi2v.explain_boxes import _box_masks, box_clips, localisation, mass_in_boxes  # noqa: E402
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
    print(f"{'method':22s}" + "".join(f"{'block ' + str(b):>26s}" for b in blocks))
    for method in methods:
        cells = []
        for b in blocks:
            r = results[f"{method}@{b}"]
            s, t = r["spatial_mass_in_box"], r["temporal_mass_in_box"]
            cells.append(f"{s:.3f} / {t:.3f} ({s / chance:.1f}/{t / chance:.1f}x)" if s is not None and t is not None
                         else "n/a")
        print(f"{method:22s}" + "".join(f"{c:>26s}" for c in cells))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
