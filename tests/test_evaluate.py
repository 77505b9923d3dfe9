"""Metrics against hand-computed numbers, multi-view probability averaging, merged == unmerged, files."""
import json
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from zeroi2v.evaluate import confusion_matrix, evaluate, metrics_from_probs, save_results, topk_accuracy

# 6 videos, 4 classes. Rank of the true class in each row: 1, 3, 1, 3, 1, 4.
PROBS = torch.tensor([
    [0.70, 0.10, 0.15, 0.05],  # label 0: correct
    [0.15, 0.60, 0.20, 0.05],  # label 0: predicted 1, true class 3rd
    [0.20, 0.50, 0.25, 0.05],  # label 1: correct
    [0.40, 0.30, 0.20, 0.10],  # label 2: predicted 0, true class 3rd
    [0.05, 0.15, 0.70, 0.10],  # label 2: correct
    [0.50, 0.30, 0.15, 0.05],  # label 3: predicted 0, true class last
])
LABELS = torch.tensor([0, 0, 1, 2, 2, 3])


def test_topk_accuracy_by_hand():
    assert topk_accuracy(PROBS, LABELS, 1) == pytest.approx(0.5)  # fractions (issue 11, item 6)
    assert topk_accuracy(PROBS, LABELS, 2) == pytest.approx(0.5)
    assert topk_accuracy(PROBS, LABELS, 3) == pytest.approx(5 / 6)
    assert topk_accuracy(PROBS, LABELS, 5) == pytest.approx(1.0)  # k capped at 4 classes


def test_confusion_and_per_class_by_hand():
    cm = confusion_matrix(PROBS.argmax(1), LABELS, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]]
    m = metrics_from_probs(PROBS, LABELS)
    assert m["top1"] == pytest.approx(0.5)  # fractions (issue 11, item 6)
    assert m["top5_k"] == 4 and m["top5"] == pytest.approx(1.0)
    assert m["per_class_accuracy"] == pytest.approx([0.5, 1.0, 0.5, 0.0])
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    assert m["num_samples"] == 6
    # a class without samples is NaN and does not count in the mean
    m5 = metrics_from_probs(torch.cat([PROBS, torch.zeros(6, 1)], 1), LABELS)
    assert math.isnan(m5["per_class_accuracy"][4]) and m5["mean_class_accuracy"] == pytest.approx(0.5)
    assert m5["top5"] == pytest.approx(1.0) and m5["top5_k"] == 5


class LogitsFromPixels(nn.Module):
    """A 'model' whose logits are written into the clip: pixel (c=0, t=0, h=0, w=k) is the logit of class k."""

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        assert x.ndim == 5
        return x[:, 0, 0, 0, :self.k] + self.dummy


class ViewSet(Dataset):
    def __init__(self, view_logits, labels):
        self.view_logits, self.labels = view_logits, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        logits = self.view_logits[i]  # (V, K)
        video = torch.zeros(logits.shape[0], 3, 2, 4, 8)
        video[:, 0, 0, 0, :logits.shape[1]] = logits
        return {"video": video, "label": int(self.labels[i]), "index": i, "decode_failures": i % 2}


def test_views_are_averaged_as_probabilities():
    g = torch.Generator().manual_seed(0)
    view_logits = torch.randn(5, 3, 4, generator=g) * 3  # 5 videos, 3 views, 4 classes
    labels = torch.tensor([0, 1, 2, 3, 0])
    res = evaluate(LogitsFromPixels(4), ViewSet(view_logits, labels), num_classes=4, batch_size=2)
    expected = view_logits.softmax(-1).mean(1)
    assert torch.allclose(res["probs"], expected, atol=1e-6)
    assert not torch.allclose(res["probs"], view_logits.mean(1).softmax(-1), atol=1e-3)  # not logit averaging
    assert res["top1"] == pytest.approx(topk_accuracy(expected, labels, 1))
    assert res["indices"].tolist() == [0, 1, 2, 3, 4]
    assert res["decode_failures"] == 2


def test_merged_and_unmerged_models_evaluate_the_same(tmp_path):
    from zeroi2v.merge import merge_adapters
    from zeroi2v.model import create_model

    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_frames=4, num_classes=3, offsets="1x1,-1x1")
    with torch.no_grad():  # non-trivial adapters, so the merge has something to fold
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.normal_(0, 0.05)
    merged = merge_adapters(model)
    assert all(len(b.adapters) == 0 for b in merged.blocks)
    views = torch.randn(6, 2, 3, 4, 32, 32)

    class Clips(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"video": views[i], "label": i % 3, "index": i}

    a = evaluate(model, Clips(), batch_size=4)
    b = evaluate(merged, Clips(), batch_size=4)
    assert a["num_classes"] == 3 and a["num_samples"] == 6
    assert torch.allclose(a["probs"], b["probs"], atol=1e-5)
    assert a["top1"] == b["top1"] and torch.equal(a["confusion"], b["confusion"])


def test_save_results_writes_json_and_png(tmp_path):
    res = metrics_from_probs(torch.cat([PROBS, torch.zeros(6, 1)], 1), LABELS)
    names = ["walk", "run", "jump", "swim", "fly"]
    paths = save_results(res, tmp_path / "out", names, name="test")
    data = json.loads(paths["json"].read_text())
    assert data["top1"] == pytest.approx(0.5) and data["top5"] == pytest.approx(1.0)
    assert data["per_class_accuracy"] == {"walk": 0.5, "run": 1.0, "jump": 0.5, "swim": 0.0, "fly": None}
    assert data["confusion"][0] == [1, 1, 0, 0, 0] and data["class_names"] == names
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    with pytest.raises(ValueError, match="class names"):
        save_results(res, tmp_path / "bad", names[:3])
