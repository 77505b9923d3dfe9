"""Training augmentation is one draw per clip; test views are the right crops; normalisation inverts."""

import pytest
import torch

from zeroi2v.data import (CLIP_MEAN, CLIP_STD, SSV2_FLIP_LABEL_MAP, TestTransform, TrainTransform, denormalize,
                          normalize)


def clip(t=6, h=48, w=64, seed=0):
    """Frames that all differ, with structure (a gradient) so crops and flips are visible."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 255, w).expand(3, h, w)
    return torch.stack([(base * (0.5 + 0.1 * i) + torch.randint(0, 40, (3, h, w), generator=g)).clamp(0, 255)
                        for i in range(t)]).to(torch.uint8)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_train_output_layout_and_dtype():
    out, label = TrainTransform(size=32, short_side=40, random_erasing=0.5)(clip(), 3, gen(0))
    assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32 and label == 3


def test_train_draws_one_set_of_parameters_for_all_frames():
    # The same draw on the whole clip and on frame k alone gives frame k: nothing depends on the frame.
    transform = TrainTransform(size=32, short_side=40, randaugment=(9, 4), random_erasing=0.5)
    x = clip()
    for seed in range(12):
        whole, _ = transform(x, 0, gen(seed))
        for k in (0, 5):
            alone, _ = transform(x[k:k + 1], 0, gen(seed))
            torch.testing.assert_close(whole[:, k], alone[:, 0], atol=1e-4, rtol=0)
    # and identical frames stay identical
    same = x[:1].repeat(6, 1, 1, 1)
    out, _ = transform(same, 0, gen(1))
    assert all(torch.equal(out[:, 0], out[:, k]) for k in range(6))


def test_generator_makes_the_draw_reproducible_and_leaves_global_rng_alone():
    transform = TrainTransform(size=32, short_side=40)
    state = torch.get_rng_state()
    a, _ = transform(clip(), 0, gen(5))
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = transform(clip(), 0, gen(5))
    c, _ = transform(clip(), 0, gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_swaps_label_exactly_when_the_clip_is_mirrored():
    flipping = TrainTransform(size=32, short_side=40, randaugment=None, flip=0.5,
                              flip_label_map=SSV2_FLIP_LABEL_MAP)
    plain = TrainTransform(size=32, short_side=40, randaugment=None, flip=0.0)
    outcomes = set()
    for seed in range(16):
        out, label = flipping(clip(), 86, gen(seed))
        ref, _ = plain(clip(), 86, gen(seed))
        mirrored = torch.equal(out, ref.flip(-1))
        assert mirrored or torch.equal(out, ref)
        assert label == (87 if mirrored else 86)
        outcomes.add(mirrored)
    assert outcomes == {True, False}
    always = TrainTransform(size=32, short_side=40, randaugment=None, flip=1.0, flip_label_map=SSV2_FLIP_LABEL_MAP)
    assert always(clip(), 167, gen(0))[1] == 166 and always(clip(), 5, gen(0))[1] == 5


def test_three_crops_along_the_long_side():
    x = clip(t=4, h=40, w=60)
    views = TestTransform(size=40, short_side=None, crops=3)(x)
    assert views.shape == (3, 3, 4, 40, 40)
    pixels = denormalize(views)  # (3, T, H, W, C)
    for view, left in zip(pixels, (0, 10, 20)):
        assert torch.equal(view, x[..., left:left + 40].permute(0, 2, 3, 1))
    tall = x.transpose(-1, -2)  # portrait 60 x 40: top / centre / bottom
    for view, top in zip(denormalize(TestTransform(40, None, crops=3)(tall)), (0, 10, 20)):
        assert torch.equal(view, tall[:, :, top:top + 40].permute(0, 2, 3, 1))


def test_single_centre_crop_after_resize():
    views = TestTransform(size=32, short_side=36, crops=1)(clip(t=5))
    assert views.shape == (1, 3, 5, 32, 32)
    with pytest.raises(ValueError):
        TestTransform(crops=2)


def test_normalize_denormalize_round_trip():
    x = clip(t=3)
    z = normalize(x)  # (T, C, H, W)
    torch.testing.assert_close(z[:, 0].mean(), (x[:, 0].float().mean() - CLIP_MEAN[0]) / CLIP_STD[0])
    back = denormalize(z.permute(1, 0, 2, 3))  # model layout (C, T, H, W) -> (T, H, W, C)
    assert back.dtype == torch.uint8 and torch.equal(back, x.permute(0, 2, 3, 1))
