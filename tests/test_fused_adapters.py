"""The fused adapter training form (zeroi2v.fused, ``model.fused_adapters``) equals the plain form."""
import pytest
import torch
import torch.nn.functional as F

from zeroi2v.fused import FusedAfter, FusedBefore, fusable
from zeroi2v.model import create_model
from adapter_helpers import random_adapters


def _plain(side, x, w_p, b_p, w_d, b_d, w_u, b_u, s):
    adapter = lambda t: t + s * F.linear(F.linear(t, w_d, b_d), w_u, b_u)  # noqa: E731
    return F.linear(adapter(x), w_p, b_p) if side == "before" else adapter(F.linear(x, w_p, b_p))


@pytest.mark.parametrize("side,fn", [("before", FusedBefore), ("after", FusedAfter)])
@pytest.mark.parametrize("bias", [True, False])
def test_the_function_matches_the_plain_composition_in_float64(side, fn, bias):
    g = torch.Generator().manual_seed(0)
    n_in, n_out = (6, 10) if side == "before" else (6, 5)   # before: any shape; after: out >= in or not, both exact
    dim, k = (n_in, 2) if side == "before" else (n_out, 2)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    x = r(2, 3, n_in).requires_grad_()
    w_p, b_p = r(n_out, n_in), (r(n_out) if bias else None)
    adapter = [r(k, dim).requires_grad_(), r(k).requires_grad_(), r(dim, k).requires_grad_(), r(dim).requires_grad_()]
    args = (x, w_p, b_p, *adapter, 0.5)
    assert torch.autograd.gradcheck(fn.apply, args)
    y, y_plain = fn.apply(*args), _plain(side, *args)  # the Function gives (tokens, out); fused_linear reshapes
    assert y.shape == (6, n_out)
    y = y.view(2, 3, n_out)
    torch.testing.assert_close(y, y_plain, rtol=1e-10, atol=1e-10)
    grad = r(*y.shape)
    got = torch.autograd.grad(y, [x, *adapter], grad)
    want = torch.autograd.grad(y_plain, [x, *adapter], grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _model(placement, fused, **kw):
    return create_model(backbone="zeroi2v-tiny", num_classes=5, num_frames=4, offsets="1x1,-1x1",
                        adapter={"kind": "linear", "placement": placement, "ratio": 0.25, "scale": 0.5,
                                 "dropout": kw.pop("dropout", 0.0)}, fused_adapters=fused, **kw)


def _loss_and_grads(model, video, label):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(video), label)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _adapter_calls(model):
    calls = []
    for blk in model.blocks:
        for slot, a in blk.adapters.items():
            a.register_forward_hook(lambda m, i, o, slot=slot: calls.append(slot))
    return calls


@pytest.mark.parametrize("placement", ["4", "6"])
def test_the_fused_model_gives_the_plain_loss_and_gradients(placement):
    torch.manual_seed(0)
    plain = random_adapters(_model(placement, False)).train()
    fused = _model(placement, True).train()
    fused.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.head.weight.normal_(std=0.5)   # a head that passes gradients on to the blocks
        fused.head.weight.copy_(plain.head.weight)
    plain.head_drop.p = fused.head_drop.p = 0.0
    g = torch.Generator().manual_seed(1)
    video, label = torch.randn(2, 3, 4, 32, 32, generator=g), torch.randint(0, 5, (2,), generator=g)
    calls = _adapter_calls(fused)
    loss_p, grads_p = _loss_and_grads(plain, video, label)
    loss_f, grads_f = _loss_and_grads(fused, video, label)
    # every adapter but the one after the narrowing fc2 ran inside its projection
    assert set(calls) == {"mlp_out"}
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-5)
    assert grads_f.keys() == grads_p.keys() and any(".adapters." in n for n in grads_f)
    assert "temporal_embedding" in grads_f and "head.weight" in grads_f
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-5, atol=1e-5, msg=name)
        assert grads_p[name].abs().max() > 0, name


@pytest.mark.parametrize("case", ["dropout", "full"])
def test_where_fusing_does_not_apply_the_plain_form_runs(case):
    model = _model("4", True, dropout=0.1) if case == "dropout" else _model("4", True, finetune="full")
    model.train()
    calls = _adapter_calls(model)
    model(torch.randn(1, 3, 4, 32, 32)).sum().backward()
    assert all(fusable(blk, slot) is None for blk in model.blocks for slot in blk.adapters)
    assert len(calls) == 4 * len(model.blocks)
    if case == "dropout":   # in eval the dropout is off, so the adapters fuse again
        model.eval()
        assert fusable(model.blocks[0], "attn_in") is not None and fusable(model.blocks[0], "mlp_out") is None


def test_fused_training_runs_under_bf16_autocast_like_the_plain_form():
    torch.manual_seed(0)
    plain = random_adapters(_model("4", False)).train()
    fused = _model("4", True).train()
    fused.load_state_dict(plain.state_dict())
    plain.head_drop.p = fused.head_drop.p = 0.0
    video = torch.randn(1, 3, 4, 32, 32)
    out = []
    for model in (plain, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(video).float().logsumexp(1).sum()
        loss.backward()
        out.append((loss.detach(), model.blocks[0].adapters["attn_in"].down.weight.grad))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=0.05, atol=0.05)
    assert out[1][1].dtype == torch.float32 and torch.isfinite(out[1][1]).all()
