"""The ``zeroi2v`` command line: thin verbs over the package's modules.

Errors print as one readable line (exit code 2) unless ``--debug`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _add_make_synthetic(sub):
    p = sub.add_parser("make-synthetic", help="write the synthetic temporal video set (or stills with --images)",
                       description="Write the synthetic video set: MP4s, mmaction lists per split, classes.txt, "
                                   "kinds.json and per-video object boxes; or, with --images, still images "
                                   "labelled by what and where for pre-training a small image model.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", action="store_true", help="write still images (images.npz) instead of videos")
    p.add_argument("--num-images", type=int, default=10000, help="with --images: how many")
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels (even)")
    p.add_argument("--per-class", default="80,20,30", help="videos per class for train,val,test")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: all 16)")
    p.set_defaults(func=cmd_make_synthetic)


def cmd_make_synthetic(a):
    from zeroi2v.data import synthetic
    if a.images:
        summary = synthetic.make_synthetic_images(a.out, seed=a.seed, n=a.num_images, size=a.size)
    else:
        counts = [int(c) for c in a.per_class.split(",")]
        if len(counts) != 3:
            raise ValueError("--per-class takes three numbers: train,val,test")
        summary = synthetic.make_synthetic_videos(
            a.out, seed=a.seed, classes=a.classes.split(",") if a.classes else None, num_frames=a.frames,
            size=a.size, videos_per_class=dict(zip(("train", "val", "test"), counts)))
    print(json.dumps(summary, indent=1))


def _add_pretrain_image(sub):
    p = sub.add_parser("pretrain-image", help="pre-train a small open_clip ViT on synthetic stills",
                       description="Pre-train a small image ViT (open_clip format) on what and where of "
                                   "synthetic stills and save it as an open_clip directory, loadable as "
                                   "backbone 'local-dir:OUT'.")
    p.add_argument("--images", required=True, help="images.npz written by `zeroi2v make-synthetic --images`")
    p.add_argument("--out", required=True, help="output folder (open_clip layout)")
    p.add_argument("--backbone", default="zeroi2v-tiny", help="model config to train from scratch")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", action="store_true",
                   help="then train a text tower against the frozen image model (LiT) on captions of the same "
                        "stills, so the folder is a whole CLIP: head_init 'text' and zero-shot work on it")
    p.add_argument("--text-only", action="store_true",
                   help="keep the image model already in --out and only train its text tower (implies --text)")
    p.add_argument("--text-epochs", type=int, default=8, help="epochs of the text tower (with --text)")
    p.set_defaults(func=cmd_pretrain_image)


def cmd_pretrain_image(a):
    import numpy as np
    from zeroi2v.pretrain import pretrain_image_model
    data = np.load(a.images)
    labels = {h: data[h] for h in data["heads"]}
    if not a.text_only:
        summary = pretrain_image_model(data["images"], labels, a.out, backbone=a.backbone, epochs=a.epochs, seed=a.seed)
        print(json.dumps(summary, indent=1))
    if a.text or a.text_only:
        from zeroi2v.pretrain_text import pretrain_text_tower
        print(json.dumps(pretrain_text_tower(a.out, data["images"], labels, epochs=a.text_epochs, seed=a.seed), indent=1))


def _add_train(sub):
    p = sub.add_parser("train", help="train from a YAML config (also under torchrun)",
                       description="Train a video model from a YAML config (see configs/). Runs under "
                                   "`torchrun --nproc_per_node N -m zeroi2v train ...` for several GPUs. "
                                   "Every config key is documented where it is defined (zeroi2v/config.py, "
                                   "zeroi2v/model_config.py); `zeroi2v config show FILE` prints a config fully "
                                   "resolved, and `zeroi2v init --data DIR_OR_LIST` writes a starter config for "
                                   "your own clips.")
    p.add_argument("config", help="YAML config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    from zeroi2v.run_folder import add_run_folder_arguments
    add_run_folder_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_train(a):
    from zeroi2v.config import load_config
    from zeroi2v.train import train
    result = train(load_config(a.config, a.overrides), resume=a.resume, force=a.force)
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str, bool, type(None)))}, indent=1))
    return 0 if result.get("finished") or result.get("stopped_at_max_steps") else 1


def _add_init(sub):
    p = sub.add_parser("init", help="write a commented starter config for your own clips",
                       description="Look at your clips (a folder per class, or an mmaction list `path label` "
                                   "with a classes.txt beside it) and write a short, commented config that "
                                   "inherits the paper's recipe: classes and clips counted, class names filled in, "
                                   "the sampler chosen from clip lengths, crops sized for the backbone, flips off "
                                   "for directional classes. Every key is documented in zeroi2v/config.py; "
                                   "`zeroi2v config show OUT` prints it resolved.")
    p.add_argument("--data", required=True, help="a folder per class (DIR/<class>/*.mp4, or DIR/train/<class>/... "
                                                 "with DIR/val) or an mmaction list file")
    p.add_argument("--format", choices=("folder", "mmaction"), default=None, help="the layout (default: detected)")
    p.add_argument("--backbone", default="ViT-B-16", help="image backbone (default: ViT-B-16, CLIP weights)")
    p.add_argument("--out", default="zeroi2v.yaml", help="config file to write (default: zeroi2v.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_init)


def cmd_init(a):
    from zeroi2v.init import write_starter_config
    out = write_starter_config(a.data, a.out, format=a.format, backbone=a.backbone, force=a.force)
    print(f"starter config written to {out}; check it with `zeroi2v config show {out}`, then `zeroi2v train {out}`")


def _add_eval(sub):
    p = sub.add_parser("eval", help="multi-view test of a merged checkpoint or a training run",
                       description="Evaluate on the config's test (or validation) list with clips x crops "
                                   "views; writes results.json and a confusion-matrix PNG.")
    p.add_argument("config", help="YAML config (data and test views)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="merged checkpoint directory")
    src.add_argument("--run", help="training run folder (uses its checkpoint.pt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="results folder (default: beside the checkpoint)")
    p.set_defaults(func=cmd_eval)


def _load_any(a):
    """A merged checkpoint directory, the model of a training run folder, or an ONNX export (``OnnxClassifier``);
    its ``cfg.class_names`` are the names the checkpoint records (a merged checkpoint's "class_names" entry first)."""
    if getattr(a, "onnx", None):  # an exported model: onnxruntime runs it, no torch model code
        from zeroi2v.onnx_model import OnnxClassifier
        return OnnxClassifier(a.onnx)
    if getattr(a, "checkpoint", None):
        from zeroi2v.merge import load_merged
        return load_merged(a.checkpoint)
    from zeroi2v.run_folder import load_run
    return load_run(a.run)


def _shown_names(model, where: str, found=None) -> list[str]:
    """The names ``eval`` and ``predict`` show: the model's, else those of the data (``found``), else
    'class N' (said once, on stderr)."""
    from zeroi2v.evaluate import class_labels
    from zeroi2v.run_folder import class_names_for
    n = model.cfg.num_classes
    names = model.cfg.class_names or (class_names_for(None, found, n) if found and len(found) <= n else None)
    if not names:
        print(f"[zeroi2v] note: {where} records no class names, so classes show as 'class N' (a run records the "
              f"names of its training annotation: set data.format_args.classes or model.class_names and train "
              f"again)", file=sys.stderr)
    return class_labels(names, n)


def cmd_eval(a):
    from zeroi2v.config import load_config
    from zeroi2v.evaluate import accuracy_lines, evaluate, save_results
    from zeroi2v.data.build import build_datasets
    cfg = load_config(a.config, a.overrides)
    model = _load_any(a)
    _, val_set, test_set = build_datasets(cfg, model.image_size, splits=("test",))  # class order: training list
    dataset = test_set or val_set
    if dataset is None:
        raise ValueError("the config names no test_ann or val_ann to evaluate on")
    names = _shown_names(model, a.checkpoint or a.run, getattr(dataset, "classes", None))
    results = evaluate(model, dataset, num_classes=model.head.out_features, batch_size=cfg.test.batch_size)
    out = Path(a.out or (a.checkpoint or a.run)) / "eval"
    save_results(results, out, names)
    print("\n".join(accuracy_lines(results, names)), f"\nresults in {out}")


def _add_merge(sub):
    p = sub.add_parser("merge", help="fold the adapters of a training run into a merged checkpoint",
                       description="Fold every linear adapter (and LoRA) into its projection and write a merged "
                                   "checkpoint directory (model.safetensors + config.json). Adapter kinds that "
                                   "cannot merge (gelu, st_adapter) are refused with the reason, before anything "
                                   "is written; use such a run unmerged (eval, predict and demo take --run).")
    p.add_argument("run", help="training run folder (config.yaml + checkpoint.pt)")
    p.add_argument("--out", required=True, help="merged checkpoint directory")
    p.add_argument("--verify", action="store_true", help="run both models on one random clip and print "
                                                         "the largest absolute logit difference")
    p.set_defaults(func=cmd_merge)


def cmd_merge(a):
    import torch
    from zeroi2v.merge import merge_adapters, save_merged
    from zeroi2v.run_folder import load_run
    model = load_run(a.run)
    merged = merge_adapters(model)
    _shown_names(model, a.run)  # says so when the run has no names
    save_merged(merged, a.out, extra={"class_names": model.cfg.class_names})
    print(f"merged checkpoint written to {a.out}")
    if a.verify:
        clip = torch.randn(2, 3, model.num_frames, model.image_size, model.image_size)
        with torch.no_grad():
            diff = (model(clip) - merged(clip)).abs().max().item()
        print(f"max |logit difference| merged vs unmerged: {diff:.3g}")
        if diff > 1e-3:
            raise RuntimeError(f"merged model differs from the unmerged one by {diff:.3g} (> 1e-3)")


def _add_predict(sub):
    p = sub.add_parser("predict", help="top-5 classes for video files",
                       description="Classify video files with a merged checkpoint, a run folder or an ONNX "
                                   "export (`zeroi2v export --onnx`, run by onnxruntime), views averaged. Frames "
                                   "are decoded straight to the model's input size; a video needs at least two "
                                   "frames (the demo's rule too).")
    p.add_argument("videos", nargs="+", help="video files (or rawframe folders)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="merged checkpoint directory")
    src.add_argument("--run", help="training run folder, unmerged (uses its checkpoint.pt)")
    src.add_argument("--onnx", help="ONNX model written by `zeroi2v export --onnx` (run by onnxruntime)")
    p.add_argument("--clips", type=int, default=1, help="temporal clips per video (views averaged), at least 1")
    p.add_argument("--top", type=int, default=5, help="classes to print per video, at least 1")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_predict)


def cmd_predict(a):
    import torch
    from zeroi2v.data.decode import VideoDecodeError, open_video, too_few_frames
    from zeroi2v.data.views import model_views
    for flag, value, what in (("--top", a.top, "classes to print per video"), ("--clips", a.clips, "views per video")):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1 ({what}), got {value}")
    model = _load_any(a)
    names = _shown_names(model, a.checkpoint or a.run or a.onnx)
    out, failed = {}, 0
    for path in a.videos:
        error = None
        try:
            source = open_video(path, short_side=model.image_size)  # scaled in the decoder, not after
            if too_few_frames(source.num_frames):
                error = f"{path!r} {too_few_frames(source.num_frames)}"
            else:
                views, _ = model_views(model, source, clips=a.clips)
        except VideoDecodeError as e:
            error = str(e)
        if error:
            out[path] = {"error": error}
            failed += 1
            continue
        with torch.no_grad():
            probs = torch.softmax(model(views), -1).mean(0)
        top = probs.topk(min(a.top, len(probs)))
        out[path] = [{"class": names[i], "probability": round(p, 4)} for p, i in zip(top.values.tolist(), top.indices.tolist())]
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for path, result in out.items():
            print(path)
            for row in (result if isinstance(result, list) else [result]):
                print(f"  {row['probability']:6.3f}  {row['class']}" if "class" in row else f"  error: {row['error']}")
    return 1 if failed else 0


def _add_config(sub):
    p = sub.add_parser("config", help="show a config fully resolved (base: chain, --set overrides, defaults)",
                       description="Print a config file as the run would see it: its base: chain merged, "
                                   "--set overrides applied, every default filled in, and validated.")
    verbs = p.add_subparsers(dest="config_verb", required=True, metavar="show")
    show = verbs.add_parser("show", help="print the resolved, validated config as YAML")
    show.add_argument("config", help="YAML config (see configs/)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    show.set_defaults(func=cmd_config_show)


def cmd_config_show(a):
    import yaml
    from zeroi2v.config import load_config
    cfg = load_config(a.config, a.overrides)
    print(f"# {a.config}, resolved{' with ' + ' '.join(a.overrides) if a.overrides else ''}")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def _add_bench(sub):
    from zeroi2v.bench import add_benchmark_arguments
    from zeroi2v.bench_suite import add_suite_arguments, run_bench_cli
    p = sub.add_parser("bench", help="params, GFLOPs and latency: plain ViT vs unmerged vs merged",
                       description="Measure, in one process, params, GFLOPs (x views) and forward latency "
                                   "of the plain image ViT, the unmerged and the merged ZeroI2V model on "
                                   "the same input; latency printed as ratios to the plain ViT "
                                   "(same as benchmarks/zero_cost.py). With --suite (or --checkpoint): "
                                   "also the GELU adapter and ST-Adapter, throughput and training cost, "
                                   "written as JSON, Markdown and a bubble plot to --out.")
    add_benchmark_arguments(p)
    add_suite_arguments(p)
    p.set_defaults(func=run_bench_cli)


def _add_quickstart(sub):
    p = sub.add_parser("quickstart", help="the whole method offline on synthetic data, in minutes",
                       description="Pre-train a small image ViT on synthetic stills, generate the synthetic "
                                   "temporal video set, train ZeroI2V, a linear probe and adapters without "
                                   "STDHA, merge, evaluate and benchmark; writes OUT/report.json, OUT/merged "
                                   "(for `zeroi2v demo`) and OUT/examples.")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="a much smaller run (smoke test, not the result)")
    p.set_defaults(func=cmd_quickstart)


def cmd_quickstart(a):
    from zeroi2v.quickstart import run_quickstart
    report = run_quickstart(a.out, seed=a.seed, fast=a.fast)
    return 0 if report.get("ok", True) else 1


def _add_demo(sub):
    p = sub.add_parser("demo", help="serve the Gradio demo on a merged checkpoint",
                       description="Start the Gradio demo: drop a video, see top-5 and Grad-CAM of the "
                                   "spatial and temporal heads.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None, help="merged checkpoint directory "
                                                        "(default: runs/quickstart/merged)")
    src.add_argument("--run", default=None, help="training run folder, served unmerged (for adapter kinds "
                                                 "that cannot merge)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_demo)


def cmd_demo(a):
    from zeroi2v.demo import launch
    launch(a.checkpoint or a.run, host=a.host, port=a.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeroi2v", description="ZeroI2V: adapt image transformers to "
                                     "video at zero extra inference cost.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    from zeroi2v import ablate, export
    from zeroi2v.fewshot import run as fewshot_run, split as split_cli
    for add in (_add_make_synthetic, _add_pretrain_image, _add_init, _add_train, _add_eval, _add_merge, _add_predict,
                _add_config, _add_bench, _add_quickstart, _add_demo, split_cli.add_cli, fewshot_run.add_cli,
                ablate.add_cli, export.add_cli):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one readable line for users; the traceback with --debug
        if args.debug:
            raise
        print(f"zeroi2v {args.verb}: error: {e}", file=sys.stderr)
        return 2
