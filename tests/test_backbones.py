"""Weights files are read as data: OpenAI-style TorchScript archives load their tensors without running
their code, broken files give one line that names them, and nothing suggests ``weights_only=False``."""
import json

import pytest
import torch
import torch.nn as nn

from zeroi2v.backbones import CONFIG_FILE, create_visual, get_model_config, load_state_dict_file
from zeroi2v.model import create_model

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


@pytest.fixture
def no_jit_load(monkeypatch):
    """Loading weights must never call torch.jit.load (it runs the archive's code)."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")
    monkeypatch.setattr(torch.jit, "load", refuse)


class OpenAIStyle(nn.Module):
    """What OpenAI's CLIP ``.pt`` holds: a traced model with ``visual.*`` weights and a few top-level
    buffers (``input_resolution``...)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.register_buffer("input_resolution", torch.tensor(32))

    def forward(self, x):
        return self.visual(x)


class Evil(nn.Module):
    """A scripted module whose ``__setstate__`` (run by ``torch.jit.load``) creates and writes a file."""

    def __init__(self, target: str):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))
        self.target = target

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]):
        mark = torch.from_file(state[1], True, 4, dtype=torch.uint8).fill_(65)  # creates the file
        self.w = state[0] + mark.sum() * 0  # uses the mark, so TorchScript keeps the call
        self.target = state[1]
        self.training = state[2]


def _trace_openai_style(path, fp16=False):
    torch.manual_seed(3)
    visual, cfg = create_visual("zeroi2v-micro")
    module = OpenAIStyle(visual).eval()
    size = cfg["vision_cfg"]["image_size"]
    traced = torch.jit.trace(module, torch.randn(1, 3, size, size), check_trace=False)
    if fp16:
        traced = traced.half()  # OpenAI ships fp16 weights
    traced.save(str(path))
    return module


@pytest.fixture
def evil(tmp_path):
    target = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.jit.script(Evil(str(target))).save(str(path))
    return path, target


def test_torchscript_clip_archive_loads_as_data(tmp_path, no_jit_load):
    module = _trace_openai_style(tmp_path / "ViT-micro.pt")
    sd = load_state_dict_file(tmp_path / "ViT-micro.pt")
    expected = module.state_dict()
    assert set(sd) == set(expected)
    assert all(torch.equal(sd[k], expected[k]) and sd[k].dtype == expected[k].dtype for k in expected)
    # through the model: every visual weight equal; OpenAI archives are QuickGELU models
    visual, cfg = create_visual("zeroi2v-micro", pretrained=str(tmp_path / "ViT-micro.pt"))
    assert cfg["quick_gelu"] is True
    for k, v in module.visual.state_dict().items():
        assert torch.equal(visual.state_dict()[k], v), k
    model = create_model(backbone="zeroi2v-micro", pretrained=str(tmp_path / "ViT-micro.pt"), num_classes=2, num_frames=2)
    assert torch.equal(model.visual.conv1.weight, module.visual.conv1.weight)


def test_fp16_archive_with_shared_and_strided_storages(tmp_path, no_jit_load):
    """fp16 records, and tensors that are views (offset, transposed) of one storage, come back exact."""
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            base = torch.arange(24, dtype=torch.float16)
            self.register_buffer("a", base[4:16].view(3, 4).t())
            self.register_buffer("b", base[1:5])

        def forward(self, x):
            return x + self.a.sum() + self.b.sum()

    module = Views()
    torch.jit.trace(module, torch.zeros(1), check_trace=False).save(str(tmp_path / "views.pt"))
    sd = load_state_dict_file(tmp_path / "views.pt")
    assert torch.equal(sd["a"], module.a) and sd["a"].stride() == module.a.stride() and sd["a"].dtype == torch.float16
    assert torch.equal(sd["b"], module.b)
    _trace_openai_style(tmp_path / "half.pt", fp16=True)
    assert load_state_dict_file(tmp_path / "half.pt")["visual.conv1.weight"].dtype == torch.float16


def _local_dir_with(tmp_path, weights_file):
    folder = tmp_path / "clip_dir"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps({"model_cfg": get_model_config("zeroi2v-micro")}))
    (folder / "open_clip_pytorch_model.bin").write_bytes(weights_file.read_bytes())
    return f"local-dir:{folder}", folder / "open_clip_pytorch_model.bin"


def test_evil_archive_runs_nothing_on_any_loading_path(evil, tmp_path):
    path, target = evil
    name, in_folder = _local_dir_with(tmp_path, path)
    attempts = [
        (lambda: load_state_dict_file(path), path),
        (lambda: create_visual("zeroi2v-micro", pretrained=str(path)), path),
        (lambda: create_model(backbone="zeroi2v-micro", pretrained=str(path), num_classes=2, num_frames=2), path),
        (lambda: create_visual(name), in_folder),
        (lambda: create_model(backbone=name, num_classes=2, num_frames=2), in_folder),
    ]
    for load, named in attempts:
        with pytest.raises(ValueError) as e:
            load()
        message = str(e.value)
        assert str(named) in message and "\n" not in message and "refused" in message
        assert "weights_only=False" not in message
        assert not target.exists()
    torch.jit.load(str(path))  # what the old loader did: the archive's __setstate__ writes the file
    assert target.read_bytes() == b"AAAA"


@pytest.mark.parametrize("content, says", [
    (b"", "empty"),
    (b"hello, I am not a checkpoint\n", "text"),
    (b"\x80\x02garbage that is not a pickle", "not a PyTorch"),
])
def test_broken_weights_files_are_one_named_line(tmp_path, content, says):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        create_visual("zeroi2v-micro", pretrained=str(path))
    message = str(e.value)
    assert str(path) in message and says in message and "\n" not in message and "weights_only" not in message


def test_truncated_and_pickled_code_weights_are_named(tmp_path):
    visual, _ = create_visual("zeroi2v-micro")
    torch.save(visual.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated") as e:
        load_state_dict_file(tmp_path / "cut.pt")
    assert str(tmp_path / "cut.pt") in str(e.value) and "weights_only" not in str(e.value)

    torch.save({"state_dict": {"x": torch.ones(1)}, "extra": Evil("unused")}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="refused") as e:
        load_state_dict_file(tmp_path / "code.pt")
    message = str(e.value)
    assert str(tmp_path / "code.pt") in message and "\n" not in message and "weights_only" not in message
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="safetensors") as e:
        load_state_dict_file(tmp_path / "bad.safetensors")
    assert str(tmp_path / "bad.safetensors") in str(e.value)


_STORAGE = b"(S'storage'\nctorch\nFloatStorage\nS'0'\nS'cpu'\nK\x01tQ"  # persistent id of record data/0, 1 float
_TENSOR = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + _STORAGE + b"K\x00(K\x01t(K\x01t\x89ccollections\nOrderedDict\n)RtR")


@pytest.mark.parametrize("payload, says", [
    (b"cos\nsystem\n(S'touch PWNED'\ntR.", "os.system"),                          # any other global
    (_TENSOR + b"(K\x01K\x02K\x03K\x04tb.", "state for a Tensor"),                 # BUILD on a tensor (Tensor.__setstate__)
    (b"c__torch__\nM\n)\x81}(S'w'\n" + _TENSOR.replace(b"(K\x01t(K\x01t", b"(M\x10'tK\x01\x85") + b"ub.",
     "out of bounds"),                                                             # a view past its record
])
def test_hand_made_archives_are_refused_as_data(tmp_path, payload, says):
    import pickle
    import zipfile
    path = tmp_path / "hostile.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/data.pkl", b"\x80\x02" + payload)
        zf.writestr("a/constants.pkl", pickle.dumps(()))
        zf.writestr("a/data/0", b"\0" * 4)
    with pytest.raises(ValueError) as e:
        load_state_dict_file(path)
    assert str(path) in str(e.value) and says in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "PWNED").exists()
