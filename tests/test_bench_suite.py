"""``zeroi2v bench --suite`` (issue 14, item 1): on a tiny config the JSON has every field for every model,
the costs agree with what the models are (merged = plain in GFLOPs, adapters add), ``--checkpoint`` and
``--results`` work, bad input is one line, and the throughput search stops at the cap or at memory.
No timing thresholds: the figures are only checked for being measured and consistent."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from zeroi2v.bench_suite import FIELDS, MODELS, find_throughput
from zeroi2v.cli import main
from zeroi2v.merge import merge_adapters, save_merged
from zeroi2v.model import create_model

QUICK = ["--backbone", "zeroi2v-micro", "--repeats", "2", "--train-batch", "1", "--train-steps", "1",
         "--max-batch", "2", "--throughput-seconds", "1", "--views", "1"]


def test_suite_json_has_every_field_for_every_model(tmp_path, capsys):
    assert main(["bench", "--suite", "--frames", "4", *QUICK, "--out", str(tmp_path / "b"),
                 "--json", str(tmp_path / "copy.json")]) == 0
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert report == json.loads((tmp_path / "copy.json").read_text())
    models = report["models"]
    assert list(models) == list(MODELS)
    for name, m in models.items():
        assert set(m) == set(FIELDS), name
        for key in FIELDS:
            if isinstance(m[key], float):
                assert math.isfinite(m[key]) and m[key] >= 0, (name, key)
        assert m["latency_min_ms"] <= m["latency_ms"] <= m["latency_max_ms"]
        assert m["throughput_batch"] in (1, 2) and m["throughput_clips_per_s"] > 0
        assert m["train_step_s"] > 0 and m["train_batch"] == 1 and m["trainable_params"] > 0
    # what the models are: merged costs what the plain ViT costs, adapters add; only the linear adapter merges
    te = create_model(backbone="zeroi2v-micro", num_classes=400, num_frames=4).temporal_embedding.numel()
    assert models["plain"]["latency_ratio"] == 1.0 and models["plain"]["new_inference_params"] == 0
    assert models["zeroi2v_merged"]["new_inference_params"] == te
    assert models["zeroi2v_merged"]["gflops"] == models["plain"]["gflops"] < models["zeroi2v_unmerged"]["gflops"]
    for name in ("zeroi2v_unmerged", "gelu_adapter", "st_adapter"):
        assert models[name]["new_inference_params"] > te and models[name]["train_mode"] == "adapters"
        assert models[name]["trainable_params"] < models[name]["params"]
    assert models["plain"]["train_mode"] == models["zeroi2v_merged"]["train_mode"] == "full"
    assert [m["mergeable"] for m in models.values()] == [True, True, True, False, False]
    assert report["verdict"]["merged_over_plain"] == models["zeroi2v_merged"]["latency_ratio"]
    md = (tmp_path / "b" / "bench.md").read_text()
    assert all(m["label"] in md for m in models.values()) and md in capsys.readouterr().out
    assert (tmp_path / "b" / "bubble.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_with_results(tmp_path):
    """A user's merged checkpoint against its own plain ViT, at the checkpoint's frames, top-1 recorded."""
    torch.manual_seed(0)
    save_merged(merge_adapters(create_model(backbone="zeroi2v-micro", num_classes=5, num_frames=2)), tmp_path / "ck")
    (tmp_path / "top1.json").write_text(json.dumps({"plain": 40.0, "checkpoint": 55.5}))
    assert main(["bench", "--checkpoint", str(tmp_path / "ck"), "--results", str(tmp_path / "top1.json"), *QUICK,
                 "--out", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert list(report["models"]) == ["plain", "checkpoint"] and report["setup"]["frames"] == 2
    assert report["top1"] == {"plain": 40.0, "checkpoint": 55.5}
    assert set(report["models"]["checkpoint"]) == set(FIELDS)
    assert report["models"]["checkpoint"]["gflops"] == report["models"]["plain"]["gflops"]


@pytest.mark.parametrize("content, says", [('{"zeroi2v_mergd": 60}', "unknown model name"),
                                           ('{"plain": "high"}', "model name -> top-1 number"),
                                           ("{plain: 1", "not valid JSON")])
def test_bad_results_file_is_one_line_before_measuring(tmp_path, capsys, content, says):
    bad = tmp_path / "top1.json"
    bad.write_text(content)
    assert main(["bench", "--suite", "--results", str(bad), *QUICK, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and says in err
    assert not (tmp_path / "b").exists()


class _Limited(nn.Module):
    """Runs out of memory from ``limit`` clips on, like a device that is full."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.seen = limit, []

    def forward(self, x):
        self.seen.append(x.shape[0])
        if x.shape[0] >= self.limit:
            raise RuntimeError("CPU: out of memory (tried to allocate)")
        return x.sum()


def test_throughput_search_doubles_to_the_cap_or_the_memory_limit():
    clip = torch.zeros(1, 3, 2, 4, 4)
    capped = _Limited(limit=10**6)
    r = find_throughput(capped, clip, cap=8, budget_s=60)
    assert (r["throughput_batch"], r["throughput_stop"]) == (8, "cap") and set(capped.seen) == {1, 2, 4, 8}
    r = find_throughput(_Limited(limit=4), clip, cap=64, budget_s=60)
    assert (r["throughput_batch"], r["throughput_stop"]) == (2, "memory")
    r = find_throughput(_Limited(limit=10**6), clip, cap=64, budget_s=0)
    assert (r["throughput_batch"], r["throughput_stop"]) == (1, "time budget")
    with pytest.raises(RuntimeError, match="does not fit even at batch 1"):
        find_throughput(_Limited(limit=1), clip, cap=64, budget_s=60)


@pytest.mark.parametrize("flag", ["--max-batch", "--train-batch", "--train-steps"])
def test_suite_sizes_below_one_are_one_line(tmp_path, capsys, flag):
    assert main(["bench", "--suite", *QUICK, flag, "0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} must be at least 1" in err
