#!/usr/bin/env python
"""Zero extra inference cost, measured: plain image ViT vs ZeroI2V before and after merging.

One process, one input, three models:
  plain     the open_clip image ViT run frame by frame (``zeroi2v.bench.PlainViT``), same head;
  unmerged  ZeroI2V with its linear adapters (random weights standing in for trained ones);
  merged    the same model after ``merge_adapters`` (plain ViT + STDHA + temporal embedding + head).
Latency is the median of interleaved forward passes (``measure_latency``), reported in ms and as a
ratio to the plain ViT; params and GFLOPs (multiply-adds, × views) come from ``zero_cost_report``.
The claim under test: merged / plain ≤ 1.02.

    python benchmarks/zero_cost.py                                  # ViT-B-16, 8 frames, batch 1, fp32, CPU
    python benchmarks/zero_cost.py --device cuda                    # bf16 on a GPU
    python benchmarks/zero_cost.py --backbone ViT-L-14 --frames 16 --json runs/zero_cost.json

Random weights are enough: cost does not depend on the values. Ratios are what a shared machine
measures honestly; absolute milliseconds depend on everything else running.
"""
from __future__ import annotations

import argparse
import sys

from zeroi2v.bench import add_benchmark_arguments, run_benchmark_cli


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    add_benchmark_arguments(ap)
    return run_benchmark_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
