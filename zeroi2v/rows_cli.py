"""The command-line options every resumable row runner shares (``zeroi2v fewshot``, ``zeroi2v ablate``):
``--workers``, ``--launcher``, ``--slurm`` and ``--keep-checkpoints``, read into ``zeroi2v.rows.run_rows``'s
arguments by ``runner_options``."""
from __future__ import annotations

import argparse
from typing import Any, Sequence


def add_runner_options(p: argparse.ArgumentParser) -> None:
    """Add the shared options to a verb's parser."""
    p.add_argument("--workers", type=int, default=1, help="rows in parallel (one GPU each when there are GPUs)")
    p.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="submitit: one Slurm job per row (pip install submitit)")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="submitit parameter, e.g. --slurm slurm_partition=gpu --slurm timeout_min=240")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each trained row's checkpoint.pt")


def launcher_options(items: Sequence[str]) -> dict[str, Any]:
    """``--slurm KEY=VALUE`` items as a dict, the values read as YAML scalars."""
    import yaml
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm timeout_min=240")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def runner_options(a: argparse.Namespace) -> dict[str, Any]:
    """The parsed shared options as ``workers``, ``launcher``, ``launcher_options``, ``keep_checkpoints``."""
    return dict(workers=a.workers, launcher=a.launcher, launcher_options=launcher_options(a.slurm),
                keep_checkpoints=a.keep_checkpoints)
