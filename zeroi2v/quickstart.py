"""The offline quickstart: the whole method on synthetic data, on 2 CPU cores, in minutes.

1. Pre-train a small open_clip ViT on synthetic stills (what and where): our stand-in for CLIP,
   saved in open_clip's layout and loaded back through the ``local-dir:`` path real CLIP takes.
2. Generate the synthetic temporal video set (real MP4s; *order* and *relation* classes).
3. From the same frozen image model, train ZeroI2V (STDHA + linear adapters), adapters without
   STDHA (every Δt = 0), and a linear probe on frame-averaged features.
4. Merge ZeroI2V, test merged and unmerged with multi-view testing, count params and FLOPs and time
   the plain image model against the merged one in one process; Grad-CAM localisation (mass inside
   the moving object's box, spatial and temporal heads, against chance).
5. Write ``report.json`` (and print it as a table), ``merged/`` for the demo and ``examples/``.
Stages 1 and 2 are cached in the output folder: a second run starts at stage 3. On 2 cores stage 1 trains in
a forked process while stage 2 and the decoding run here (``zeroi2v.quickstart_data``); the two adapter runs
train in two forked processes; the linear probe reads features computed once (``zeroi2v.probe``).
"""
from __future__ import annotations

import copy
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from zeroi2v.config import Config, DataConfig, OptimConfig, TestConfig, TrainConfig
from zeroi2v.data.dataset import VideoDataset
from zeroi2v.data.formats import read_annotation
from zeroi2v.data.views import make_sampler
from zeroi2v.data.synthetic import flip_label_map
from zeroi2v.model import ModelConfig
from zeroi2v.quickstart_data import ensure_image_model, ensure_videos, finish_image_model, start_image_model

__all__ = ["QuickstartSettings", "run_quickstart", "ensure_image_model", "ensure_videos", "format_report"]


@dataclass
class QuickstartSettings:
    """Sizes and schedule of the quickstart, as plain data (``fast`` shrinks everything for tests)."""

    backbone: str = "zeroi2v-tiny"
    """Image model trained from scratch on stills (open_clip config in zeroi2v/model_configs)."""
    images: int = 8000
    pretrain_epochs: int = 6
    classes: tuple = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink",
                      "still", "slow", "fast", "jitter")
    """Six *order* classes (mirror pairs) and four *relation* classes, a motion family whose frames all
    look alike and whose relation shows in every pair of neighbouring frames (how far the object goes).
    Not here, because no variant we tried learnt them in a few CPU minutes: relations shown by one frame
    pair only (a single colour change, a stop), and colour_flicker vs colour_same (0.33-0.60 after 8
    epochs: comparing two colours takes far longer to learn than comparing two positions)."""
    videos_per_class: tuple = (300, 30)
    """Synthetic videos per class for train and test. Many short clips matter more than epochs: with 80
    per class the adapters memorised the relation classes; with 400 they learnt the relation."""
    video_frames: int = 8
    size: int = 32
    num_frames: int = 8
    """Frames the video model reads: every frame of the 8-frame videos."""
    offsets: str = "1x2,-1x2"
    """Δt: 4 of the 8 heads temporal. The paper's best share on SSv2 is 1/6-1/4 (Table 1b), with half
    (its {1·3, -1·3, 0·6}) 0.4 points behind; on this synthetic set, where the task is mostly temporal and
    heads are only 16 wide, half measured better: top-1 0.87 against 0.77-0.79 with {1·1, -1·1} (6 epochs,
    the 11-class set with colour_flicker), and on these classes 0.93-0.94 after 6 epochs."""
    epochs: int = 7
    """0.93-0.94 after 6 epochs and 0.96 after 8 in one-process trials; 7 keeps a margin over 0.90. Shorter
    schedules (ZeroI2V alone, same data): 3 epochs give 0.79 at batch 16, 0.83 at 8, 0.86 at 4 (relation 0.57-0.72);
    4-frame videos learn the order classes sooner but stall on still/slow/fast/jitter (relation 0.57-0.63)."""
    probe_epochs: int = 3
    """Epochs of the linear probe, on the frozen model's features computed once (``zeroi2v.probe``): no flips."""
    batch_size: int = 16
    """Clips per optimiser step: at a fixed compute budget, more (smaller) steps learnt more (measured)."""
    lr: float = 2e-3
    """Higher than the paper's 3e-4 at batch 64: a tiny model, a few hundred steps."""
    clip_grad: float | None = 1.0
    """Gradient-norm clipping (not in the paper's recipe): at 3e-3 and no clipping one run diverged."""
    head_dropout: float = 0.1
    test_clips: int = 1
    threads: int = 1
    """Intra-op threads per process: tiny matrices run faster on one thread per core."""
    parallel: bool = True
    """Train ZeroI2V and the no-STDHA baseline at once, one forked process (one core) each."""
    examples: int = 6


FAST = dict(backbone="zeroi2v-micro", images=600, pretrain_epochs=1, videos_per_class=(3, 2),
            epochs=1, probe_epochs=1, batch_size=16, examples=2)


def _stage(timings: dict, name: str, log: Callable):
    class _Timer:
        def __enter__(self):
            log(f"[quickstart] {name} ...")
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.start, 1)
            if exc[0] is None:
                log(f"[quickstart] {name}: {timings[name]} s")
    return _Timer()


def run_quickstart(out_dir: str | Path = "runs/quickstart", seed: int = 0, fast: bool = False,
                   log: Callable[[str], None] = print, **overrides: Any) -> dict[str, Any]:
    """Run every stage; returns the report (also written to ``out_dir/report.json``)."""
    s = replace(QuickstartSettings(), **{**(FAST if fast else {}), **overrides})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(s.threads)
    start, timings = time.perf_counter(), {}

    image_dir, video_dir = out / "image_model", out / "videos"
    backbone = f"local-dir:{image_dir}"
    # stage 1 trains in a forked process (one core) while stage 2 and the decoding use the other
    pretraining = start_image_model(s, out, image_dir, seed, log)
    try:
        with _stage(timings, "synthetic videos", log):
            ensure_videos(s, video_dir, seed, log, workers=1 if pretraining else 2)
        classes = (video_dir / "classes.txt").read_text().split()
        kinds = json.loads((video_dir / "kinds.json").read_text())
        # 3. three runs from the same frozen image model
        adapters = {"zeroi2v": dict(temporal={"kind": "stdha", "offsets": s.offsets}),
                    "no_stdha": dict(temporal={"kind": "stdha", "offsets": None})}
        configs = {name: _run_config(s, backbone, classes, out / "runs" / name, seed, epochs=s.epochs, **o)
                   for name, o in adapters.items()}
        configs["linear_probe"] = _run_config(s, backbone, classes, out / "runs" / "linear_probe", seed,
                                              epochs=s.probe_epochs, temporal={"kind": "stdha", "offsets": None},
                                              adapter=None, finetune="linear_probe")
        with _stage(timings, "decode videos", log):
            train_set, test_set = _datasets(video_dir, configs["zeroi2v"], s, seed)
    except BaseException:
        if pretraining is not None:
            pretraining.terminate()
        raise
    with _stage(timings, "image model", log):
        finish_image_model(pretraining, s, out, image_dir, seed, log)
    with _stage(timings, "train zeroi2v + no_stdha", log):
        trained = _train_runs({k: configs[k] for k in adapters}, train_set, test_set, s.parallel)
    with _stage(timings, "train linear_probe", log):
        results = {"linear_probe": _linear_probe(configs["linear_probe"], train_set, test_set, s)}
    models = {name: model for name, (model, _) in trained.items()}
    results.update({name: result for name, (_, result) in trained.items()})
    for name, result in results.items():
        log(f"[quickstart]   {name}: test top-1 {result['top1']:.3f}")

    # 4. merge, test, measure
    from zeroi2v.bench import zero_cost_report
    from zeroi2v.evaluate import metrics_from_probs, save_results
    from zeroi2v.merge import merge_adapters, save_merged
    with _stage(timings, "merge and test", log):
        merged = merge_adapters(models["zeroi2v"])
        agreement, max_diff, merged_probs, labels = _compare(models["zeroi2v"], merged, test_set)
        merged_result = metrics_from_probs(merged_probs, labels, len(classes))
        save_results(merged_result, out / "runs" / "zeroi2v_merged", classes)
    with _stage(timings, "efficiency", log):
        clip = torch.randn(1, 3, s.num_frames, s.size, s.size)
        eff = zero_cost_report(models["zeroi2v"], merged, clip, views=s.test_clips, repeats=20)
    with _stage(timings, "explain", log):
        explain = _explain_check(merged, video_dir, n=4 if fast else EXPLAIN_CLIPS)

    # 5. write everything out
    examples = _copy_examples(video_dir, out / "examples", classes, s.examples)
    save_merged(merged, out / "merged", extra={
        "class_names": classes, "kinds": kinds, "examples": [str(p.relative_to(out)) for p in examples],
        "facts": {"params": eff["params"]["merged"], "params_plain": eff["params"]["plain"],
                  "gflops": eff["gflops"]["merged"], "gflops_plain": eff["gflops"]["plain"], "views": s.test_clips},
        "trained_on": "zeroi2v quickstart synthetic set"})
    report = _report(s, results, merged_result, classes, kinds, max_diff, agreement, eff, explain,
                     image_dir, out, seed, fast, timings, start)
    report["checks"] = _checks(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    log(format_report(report))
    return report


def _report(s, results, merged_result, classes, kinds, max_diff, agreement, eff, explain, image_dir,
            out, seed, fast, timings, start) -> dict[str, Any]:
    """The report: top-1 per run and per kind of class, merge exactness, params, GFLOPs, latency, CAMs."""
    by_kind = {name: _by_kind(res, classes, kinds) for name, res in {**results, "zeroi2v_merged": merged_result}.items()}
    report = {
        "top1": {"zeroi2v": results["zeroi2v"]["top1"], "zeroi2v_merged": merged_result["top1"],
                 "linear_probe": results["linear_probe"]["top1"], "no_stdha": results["no_stdha"]["top1"]},
        "top1_by_kind": by_kind,
        "merge": {"max_abs_logit_diff": max_diff, "prediction_agreement": agreement},
        "params": {"plain": eff["params"]["plain"], "merged": eff["params"]["merged"],
                   "temporal_embedding": eff["params"]["temporal_embedding"], "classifier": eff["params"]["classifier"],
                   "unmerged": eff["params"]["unmerged"]},
        "gflops": {"plain": eff["gflops"]["plain"], "merged": eff["gflops"]["merged"], "unmerged": eff["gflops"]["unmerged"],
                   "views": s.test_clips},
        "latency_ms": {k: round(v, 3) for k, v in eff["latency_ms"].items()},
        "latency_ratio": {k: round(v, 3) for k, v in eff["latency_ratio"].items()},
        "explain": explain,
        "image_model": json.loads((image_dir / "pretrain.json").read_text()).get("val_accuracy"),
        "settings": {**asdict(s), "seed": seed, "fast": fast},
        "stage_seconds": timings,
        "seconds": round(time.perf_counter() - start, 1),
        "outputs": {"merged": str(out / "merged"), "examples": str(out / "examples"), "runs": str(out / "runs")},
    }
    return report


def _datasets(video_dir: Path, cfg: Config, s: QuickstartSettings, seed: int):
    """The real pipeline (decord decoding, TSN sampling, transforms.v2), decoded once and cached, with the
    augmentation and test views of ``cfg`` (``_data_config``) through the transform factories every run uses."""
    from zeroi2v.data.build import test_transform, train_transform
    classes = cfg.model.class_names
    train = VideoDataset(read_annotation("mmaction", video_dir / "train.txt"), video_dir, classes=classes,
                         sampler=make_sampler("uniform", s.num_frames), train=True, seed=seed, cache_decoded=True,
                         transform=train_transform(cfg, s.size, classes))
    test = VideoDataset(read_annotation("mmaction", video_dir / "test.txt"), video_dir, classes=classes,
                        sampler=make_sampler("uniform", s.num_frames, clips=s.test_clips), train=False, seed=seed,
                        cache_decoded=True, transform=test_transform(cfg, s.size))
    for ds in (train, test):  # decode every video once, up front
        for i in range(len(ds)):
            ds[i]
    return train, test


def _linear_probe(cfg: Config, train_set: VideoDataset, test_set: VideoDataset, s: QuickstartSettings) -> dict:
    """The linear probe on features computed once (``zeroi2v.probe``): every training clip as its test view
    (the decoded frames of ``train_set``, shared), the test views of ``test_set``; its test summary."""
    from zeroi2v.data.build import test_transform
    from zeroi2v.probe import train_feature_probe
    train_views = copy.copy(train_set)  # shares the decoded-video cache
    train_views.train, train_views.transform = False, test_transform(cfg, s.size)
    train_views.sampler = make_sampler("uniform", s.num_frames)
    train_feature_probe(cfg, train_views, test_set, batch_size=cfg.test.batch_size)
    return json.loads((Path(cfg.train.out_dir) / "results" / "test.json").read_text())


def _data_config(s: QuickstartSettings, classes: list[str]) -> DataConfig:
    """The quickstart's augmentation: a flip only, whose label map swaps the mirror classes (left and right
    movers); no RandAugment and whole-frame crops (crop_scale [1, 1]), since the order classes are about
    where the object is and crops would blur the very cue they need; frames already at the crop size."""
    mirrors = flip_label_map(classes)
    pairs = [[classes[a], classes[b]] for a, b in mirrors.items() if a < b]
    return DataConfig(workers=0, size=s.size, short_side=s.size, randaugment=None, crop_scale=(1.0, 1.0), flip=0.5,
                      flip_label_map=pairs)


def _run_config(s: QuickstartSettings, backbone: str, classes: list[str], out_dir: Path, seed: int,
                epochs: int, **model_overrides: Any) -> Config:
    model_overrides.setdefault("adapter", {"kind": "linear", "placement": "4", "scale": 1.0})
    model = ModelConfig(backbone=backbone, num_classes=len(classes), num_frames=s.num_frames, class_names=classes,
                        head_dropout=s.head_dropout, **model_overrides)
    return Config(model=model, data=_data_config(s, classes),
                  optim=OptimConfig(lr=s.lr, epochs=epochs, warmup_epochs=1, label_smoothing=0.1, clip_grad=s.clip_grad),
                  train=TrainConfig(batch_size=s.batch_size, total_batch=s.batch_size, device="cpu", seed=seed,
                                    eval_every=0, save_every=max(1, epochs), out_dir=str(out_dir), log_every=20,
                                    progress=False),
                  test=TestConfig(clips=s.test_clips, crops=1, batch_size=16))


def _train_runs(configs: dict[str, Config], train_set, test_set, parallel: bool) -> dict[str, tuple]:
    """Train each config; returns {name: (trained model, test summary)} read back from the run folders.

    With ``parallel`` the runs go to forked processes (the decoded-video cache is shared copy-on-write),
    one thread each: on 2 cores two 1-thread runs take about as long as one. The quickstart owns its run
    folders: a re-run trains them again over the previous runs (``force``).
    """
    from zeroi2v.run_folder import load_run
    from zeroi2v.train import train
    if parallel and len(configs) > 1 and hasattr(os, "fork"):
        ctx = multiprocessing.get_context("fork")
        procs = {name: ctx.Process(target=_train_child, args=(cfg, train_set, test_set), name=f"train-{name}")
                 for name, cfg in configs.items()}
        for p in procs.values():
            p.start()
        for name, p in procs.items():
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"training run '{name}' failed (exit code {p.exitcode}); its folder is "
                                   f"{configs[name].train.out_dir}")
    else:
        for cfg in configs.values():
            train(cfg, train_set=train_set, test_set=test_set, force=True)
    out = {}
    for name, cfg in configs.items():
        run = Path(cfg.train.out_dir)
        out[name] = (load_run(run), json.loads((run / "results" / "test.json").read_text()))
    return out


def _train_child(cfg: Config, train_set, test_set) -> None:
    torch.set_num_threads(1)
    for ds in (train_set, test_set):  # a sibling run's set_epoch must not reach this run's data
        ds.own_shared_state()
    from zeroi2v.train import train
    train(cfg, train_set=train_set, test_set=test_set, force=True)


@torch.no_grad()
def _compare(model, merged, dataset):
    """Two models on every test view (views averaged as probabilities, as ``evaluate`` does): prediction
    agreement, the largest |logit difference|, and the merged model's probabilities and the labels."""
    same, max_diff, merged_probs, labels = 0, 0.0, [], []
    for i in range(len(dataset)):
        item = dataset[i]
        a, b = model(item["video"]), merged(item["video"])
        max_diff = max(max_diff, (a - b).abs().max().item())
        pa, pb = a.softmax(-1).mean(0), b.softmax(-1).mean(0)
        same += int(pa.argmax() == pb.argmax())
        merged_probs.append(pb)
        labels.append(item["label"])
    return same / len(dataset), max_diff, torch.stack(merged_probs), torch.tensor(labels)


def _by_kind(result: dict, classes: list[str], kinds: dict[str, str]) -> dict[str, float]:
    """Top-1 over the videos of each kind of class, from the confusion matrix (rows = true class)."""
    confusion = torch.as_tensor(result["confusion"], dtype=torch.float64)
    out = {}
    for kind in sorted(set(kinds.values())):
        rows = [i for i, c in enumerate(classes) if kinds[c] == kind]
        out[kind] = round((confusion[rows, rows].sum() / confusion[rows].sum()).item(), 4)
    return out


EXPLAIN_CLIPS = 100  # test clips the Grad-CAM figure averages over (evenly spaced: every class)


def _explain_check(model, video_dir: Path, n: int) -> dict[str, Any]:
    """Grad-CAM of the spatial and the temporal heads at the demo's default block (the last) with the
    demo's method: the maps' mass inside the moving object's box, against chance (box area / frame area).
    ``benchmarks/cam_localisation.py`` measures every method and block the same way."""
    from zeroi2v.explain import DEFAULT_METHOD, box_clips, localisation
    meta = json.loads((video_dir / "test_meta.json").read_text())
    clips = box_clips(model, video_dir, meta[::max(1, len(meta) // n)][:n])
    # a clip whose map is all zero (no positive evidence for the class) has no mass to place: skipped
    return localisation(model, clips, method=DEFAULT_METHOD, block=-1)


def _copy_examples(video_dir: Path, dest: Path, classes: list[str], n: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    lines = (video_dir / "test.txt").read_text().splitlines()
    by_class: dict[int, str] = {}
    for line in lines:
        path, label = line.rsplit(" ", 1)
        by_class.setdefault(int(label), path)
    labels = sorted(by_class)  # n classes spread evenly over the list, so both kinds are shown
    picked = [by_class[labels[i]] for i in sorted({round(j * (len(labels) - 1) / max(1, n - 1)) for j in range(n)})]
    out = []
    for rel in picked:
        target = dest / Path(rel).name
        shutil.copyfile(video_dir / rel, target)
        out.append(target)
    return out


def _checks(r: dict) -> dict[str, bool]:
    """The quickstart's promises, evaluated on its own report."""
    p = r["params"]
    return {
        "top1.zeroi2v >= 0.90": r["top1"]["zeroi2v"] >= 0.90,
        "top1.linear_probe <= 0.60": r["top1"]["linear_probe"] <= 0.60,
        "relation: zeroi2v - no_stdha >= 0.10":
            r["top1_by_kind"]["zeroi2v"]["relation"] - r["top1_by_kind"]["no_stdha"]["relation"] >= 0.10,
        "merge.prediction_agreement == 1": r["merge"]["prediction_agreement"] == 1.0,
        "merge.max_abs_logit_diff <= 1e-3": r["merge"]["max_abs_logit_diff"] <= 1e-3,
        "params.merged - params.plain == temporal embedding + classifier":
            p["merged"] - p["plain"] == p["temporal_embedding"] + p["classifier"],
        "gflops.merged == gflops.plain": r["gflops"]["merged"] == r["gflops"]["plain"],
        **_explain_checks(r["explain"]),
    }


def _explain_checks(e: dict) -> dict[str, bool]:
    """Grad-CAM points at the object: each head group's mass in the box is at least twice chance."""
    return {f"explain.{g}_mass_in_box >= 2 x chance":
            e.get(f"{g}_mass_in_box") is not None and e[f"{g}_mass_in_box"] >= 2 * e["chance"]
            for g in ("spatial", "temporal")}


def format_report(r: dict) -> str:
    k = r["top1_by_kind"]
    lines = ["", "ZeroI2V quickstart — synthetic temporal video set, tiny image ViT pre-trained on stills",
             f"{'run':16s} {'top-1':>7s} {'order':>7s} {'relation':>9s}"]
    for name, label in (("zeroi2v", "ZeroI2V"), ("zeroi2v_merged", "ZeroI2V merged"), ("no_stdha", "no STDHA"),
                        ("linear_probe", "linear probe")):
        lines.append(f"{label:16s} {r['top1'][name]:7.3f} {k[name].get('order', float('nan')):7.3f} "
                     f"{k[name].get('relation', float('nan')):9.3f}")
    lines += [f"merge: max |Δlogit| {r['merge']['max_abs_logit_diff']:.2e}, prediction agreement "
              f"{r['merge']['prediction_agreement']:.3f}",
              f"params: plain {r['params']['plain']:,}  merged {r['params']['merged']:,} "
              f"(+{r['params']['temporal_embedding']:,} temporal embedding +{r['params']['classifier']:,} classifier)",
              f"GFLOPs ({r['gflops']['views']} views): plain {r['gflops']['plain']:.4f}  merged {r['gflops']['merged']:.4f}"
              f"  unmerged {r['gflops']['unmerged']:.4f}",
              f"latency: plain {r['latency_ms']['plain']:.2f} ms  merged {r['latency_ms']['merged']:.2f} ms "
              f"(ratio {r['latency_ratio']['merged']:.3f})"]
    e = r["explain"]
    if e.get("temporal_mass_in_box") is not None or e.get("spatial_mass_in_box") is not None:
        parts = [f"{g} heads {e[f'{g}_mass_in_box']:.2f}" for g in ("spatial", "temporal")
                 if e.get(f"{g}_mass_in_box") is not None]
        lines.append(f"Grad-CAM ({e.get('method', 'gradcam')}, block {e.get('block')}): {', '.join(parts)} of the "
                     f"map inside the object's box (chance {e['chance']:.2f})")
    met = sum(r["checks"].values())
    lines.append(f"checks: {met}/{len(r['checks'])} met" + "".join(f"\n  NOT MET: {c}" for c, ok in r["checks"].items() if not ok))
    lines.append(f"time: {r['seconds']:.0f} s  ({', '.join(f'{k} {v:.0f}s' for k, v in r['stage_seconds'].items())})")
    lines.append(f"merged checkpoint: {r['outputs']['merged']}  — open the demo with `make demo` "
                 f"or `zeroi2v demo --checkpoint {r['outputs']['merged']}`")
    return "\n".join(lines)
