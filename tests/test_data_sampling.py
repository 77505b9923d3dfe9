"""Exact frame indices of the samplers, computed by hand."""

import numpy as np
import pytest

from zeroi2v.data import DenseSampler, UniformSampler


def rng(seed=0):
    return np.random.default_rng(seed)


def test_uniform_test_mode_takes_segment_middles():
    # 16 frames, 4 segments of 4: middles 2, 6, 10, 14
    np.testing.assert_array_equal(UniformSampler(4)(16, train=False), [[2, 6, 10, 14]])
    # 10 frames: segments [0,2) [2,5) [5,7) [7,10) -> middles 1, 3, 6, 8
    np.testing.assert_array_equal(UniformSampler(4)(10, train=False), [[1, 3, 6, 8]])


def test_uniform_several_test_clips_spread_inside_segments():
    # offsets 1/4 and 3/4 of each 4-frame segment
    out = UniformSampler(4, num_clips=2)(16, train=False)
    np.testing.assert_array_equal(out, [[1, 5, 9, 13], [3, 7, 11, 15]])
    assert out.dtype == np.int64 and out.shape == (2, 4)


def test_uniform_train_takes_one_random_frame_per_segment():
    sampler = UniformSampler(4)
    seen = np.stack([sampler(10, train=True, rng=rng(s))[0] for s in range(200)])
    # each column stays in its segment [0,2) [2,5) [5,7) [7,10) and visits every frame of it
    for col, segment in enumerate([{0, 1}, {2, 3, 4}, {5, 6}, {7, 8, 9}]):
        assert set(seen[:, col].tolist()) == segment
    # reproducible from the generator
    np.testing.assert_array_equal(sampler(10, True, rng(7)), sampler(10, True, rng(7)))


def test_uniform_short_video_repeats_frames_in_order_in_both_modes():
    expected = [[0, 0, 0, 1, 1, 2, 2, 2]]  # 3 frames into 8 slots
    np.testing.assert_array_equal(UniformSampler(8)(3, train=False), expected)
    np.testing.assert_array_equal(UniformSampler(8)(3, train=True, rng=rng()), expected)
    np.testing.assert_array_equal(UniformSampler(8)(8, train=False), [list(range(8))])


def test_dense_test_mode_centres_one_clip_and_spreads_several():
    # 4 frames every 2nd frame = span 8; 20 frames -> offsets in [0, 12]
    np.testing.assert_array_equal(DenseSampler(4, 2)(20, train=False), [[6, 8, 10, 12]])
    np.testing.assert_array_equal(DenseSampler(4, 2, num_clips=3)(20, train=False),
                                  [[0, 2, 4, 6], [6, 8, 10, 12], [12, 14, 16, 18]])
    # the paper's K400 8x16, 3 clips, on a 300-frame video: offsets 0, 86, 172
    out = DenseSampler(8, 16, num_clips=3)(300, train=False)
    np.testing.assert_array_equal(out[:, 0], [0, 86, 172])
    np.testing.assert_array_equal(out[2], 172 + 16 * np.arange(8))


def test_dense_train_random_start_covers_every_offset():
    sampler = DenseSampler(4, 2)
    starts = {int(sampler(20, train=True, rng=rng(s))[0, 0]) for s in range(300)}
    assert starts == set(range(13))
    clip = sampler(20, True, rng(3))[0]
    np.testing.assert_array_equal(np.diff(clip), [2, 2, 2])
    # two clips: one random start in each half of the offsets [0, 6] and [6, 12]
    two = np.stack([DenseSampler(4, 2, num_clips=2)(20, True, rng(s))[:, 0] for s in range(200)])
    assert set(two[:, 0]) == set(range(6)) and set(two[:, 1]) == set(range(6, 12))


def test_dense_short_video_loops_deterministically():
    # span 8 > 5 frames: start at 0, indices modulo 5
    for train in (False, True):
        np.testing.assert_array_equal(DenseSampler(4, 2)(5, train, rng()), [[0, 2, 4, 1]])
    np.testing.assert_array_equal(DenseSampler(4, 2, num_clips=2)(5, True, rng()), [[0, 2, 4, 1]] * 2)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        UniformSampler(0)
    with pytest.raises(ValueError):
        DenseSampler(8, 0)
    with pytest.raises(ValueError, match="0 frames"):
        UniformSampler(8)(0, train=False)
