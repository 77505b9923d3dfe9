"""Export of merged checkpoints (issue 14, item 4): ONNX and torch.export match PyTorch with a dynamic batch,
``predict --onnx`` agrees with ``predict --checkpoint``, and bad inputs are one-line errors."""
import json

import pytest
import torch

from zeroi2v.cli import main
from zeroi2v.export import example_clip, export_onnx, export_program, load_for_export, max_abs_diff
from zeroi2v.merge import load_merged, merge_adapters, save_merged
from zeroi2v.model import create_model
from zeroi2v.onnx_model import OnnxClassifier
from adapter_helpers import random_adapters

NAMES = ["left", "right", "colour"]


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """A micro merged checkpoint with non-trivial adapters, temporal embedding and STDHA in both directions."""
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=4,
                         temporal={"kind": "stdha", "offsets": "1x1,-1x1", "boundary": "zero"})
    random_adapters(model)
    out = tmp_path_factory.mktemp("export") / "merged"
    save_merged(merge_adapters(model.eval()), out, extra={"class_names": NAMES})
    return out


@pytest.fixture(scope="module")
def onnx_file(merged, tmp_path_factory):
    return export_onnx(load_merged(merged), tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_matches_pytorch_at_two_batch_sizes(merged, onnx_file):
    model = load_merged(merged)
    clf = OnnxClassifier(onnx_file)
    for batch in (1, 5):  # traced at batch 2: both prove the batch axis is dynamic
        clip = example_clip(model, batch, seed=batch)
        with torch.no_grad():
            want = model(clip)
        got = clf(clip)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-4
    # STDHA is plain ops: Gather on K/V, attention as MatMul + Softmax, nothing custom
    import onnx
    ops = {n.op_type for n in onnx.load(str(onnx_file)).graph.node}
    assert {"Gather", "MatMul", "Softmax"} <= ops and all(n.domain in ("", "ai.onnx") for n in onnx.load(
        str(onnx_file)).graph.node)


def test_onnx_metadata_holds_the_preprocessing_facts(merged, onnx_file):
    model = load_merged(merged)
    clf = OnnxClassifier(onnx_file)
    assert clf.cfg.class_names == NAMES and clf.num_frames == model.num_frames == 4
    assert clf.image_size == model.image_size and clf.num_classes == 3
    assert clf.cfg.mean == pytest.approx(tuple(model.cfg.mean)) and clf.cfg.std == pytest.approx(tuple(model.cfg.std))


def test_torch_export_matches_pytorch_at_two_batch_sizes(merged):
    model = load_merged(merged)
    program = export_program(model)
    assert max_abs_diff(model, program.module(), batches=(1, 5)) <= 1e-4


def test_export_cli_writes_both_and_prints_the_difference(merged, tmp_path, capsys):
    onnx_out, pt2_out = tmp_path / "m.onnx", tmp_path / "m.pt2"
    assert main(["export", str(merged), "--onnx", str(onnx_out), "--torch-export", str(pt2_out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert onnx_out.is_file() and pt2_out.is_file() and not list(tmp_path.glob("*.tmp"))
    assert len(lines) == 2 and all("max |logit difference| vs PyTorch" in line for line in lines)
    assert all(float(line.rsplit(" ", 1)[1]) <= 1e-4 for line in lines)


def test_predict_onnx_gives_the_checkpoints_top_class(merged, onnx_file, tmp_path, capsys):
    from zeroi2v.data import synthetic
    data = tmp_path / "clips"
    synthetic.make_synthetic_videos(data, seed=3, classes=["move_left", "move_right", "colour_change"], num_frames=8,
                                    size=32, videos_per_class={"train": 0, "val": 0, "test": 1})
    videos = sorted(str(p) for p in data.rglob("*.mp4"))
    assert len(videos) == 3
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(merged), "--json", "--clips", "2", *videos]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert main(["predict", "--onnx", str(onnx_file), "--json", "--clips", "2", *videos]) == 0
    onnx_out = json.loads(capsys.readouterr().out)
    for v in videos:
        assert onnx_out[v][0]["class"] == torch_out[v][0]["class"] and onnx_out[v][0]["class"] in NAMES
        assert onnx_out[v][0]["probability"] == pytest.approx(torch_out[v][0]["probability"], abs=1e-3)


def test_predict_onnx_runs_no_torch_module(onnx_file, tmp_path, monkeypatch, capsys):
    """onnxruntime is the model: no torch.nn.Module (ZeroI2V, backbone, head) is called by predict --onnx."""
    from zeroi2v.data import synthetic
    synthetic.make_synthetic_videos(tmp_path, seed=1, classes=["move_left"], num_frames=8, size=32,
                                    videos_per_class={"train": 0, "val": 0, "test": 1})
    video = next(tmp_path.rglob("*.mp4"))

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"torch module {type(self).__name__} called")

    monkeypatch.setattr(torch.nn.Module, "__call__", refuse)
    assert main(["--debug", "predict", "--onnx", str(onnx_file), "--json", str(video)]) == 0
    assert json.loads(capsys.readouterr().out)[str(video)][0]["class"] in NAMES


def test_bad_inputs_are_one_line_errors(merged, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    foreign = tmp_path / "foreign.onnx"
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph), str(foreign))
    cases = [(["export", str(run), "--onnx", str(tmp_path / "o.onnx")], "is a training run folder", "zeroi2v merge"),
             (["export", str(merged)], "nothing to export", "--onnx"),
             (["predict", "--onnx", str(broken), "x.mp4"], f"{broken} is not a readable ONNX model", "zeroi2v export"),
             (["predict", "--onnx", str(foreign), "x.mp4"], f"{foreign} holds no zeroi2v metadata", "zeroi2v export"),
             (["predict", "--onnx", str(tmp_path / "none.onnx"), "x.mp4"], "does not exist", "zeroi2v export")]
    for argv, what, fix in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and what in err and fix in err and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(ValueError, match="training run folder"):
        load_for_export(run)


def test_export_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0 and "usage: zeroi2v export" in capsys.readouterr().out


def test_spatial_only_is_the_plain_vit_through_the_block_code(merged):
    """``spatial_only`` (the reference that isolates STDHA's cost in ``onnx_latency``) computes the plain ViT."""
    from zeroi2v.bench import PlainViT
    from zeroi2v.export import spatial_only
    model = load_merged(merged)
    spatial = spatial_only(model)
    assert all(not any(blk.temporal.offsets) for blk in spatial.blocks) and any(model.blocks[0].temporal.offsets)
    clip = example_clip(model, 2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(spatial(clip), PlainViT(model)(clip), rtol=1e-5, atol=1e-5)
        assert (spatial(clip) - model(clip)).abs().max() > 1e-4  # STDHA and the temporal embedding matter
