"""Reading videos and rawframe folders; every kind of broken input becomes VideoDecodeError."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from zeroi2v.data import TensorSource, VideoDecodeError, open_video, write_video


def frames(t=10, h=32, w=48):
    """Smooth frames (easy for H.264) whose brightness encodes the frame index."""
    ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    return np.stack([np.broadcast_to(ramp + 15 * i, (h, w, 3)) for i in range(t)]).astype(np.uint8)


@pytest.mark.parametrize("width", [64, 48])  # decord 0.6 cannot convert 48-px-wide frames: PyAV fallback
def test_video_file_frames_in_requested_order(tmp_path, width):
    path = tmp_path / "v.mp4"
    original = frames(w=width)
    write_video(path, original, fps=12, crf=0)
    video = open_video(path)
    assert video.num_frames == 10 and video.fps == pytest.approx(12)
    got = video.get([7, 2, 2, 9])
    assert got.shape == (4, 3, 32, width) and got.dtype == torch.uint8
    expected = torch.from_numpy(original[[7, 2, 2, 9]]).permute(0, 3, 1, 2).float()
    assert (got.float() - expected).abs().mean() < 2  # crf 0 (lossless luma), 4:2:0 chroma
    assert torch.equal(got[1], got[2])
    assert video.get_all().shape[0] == 10


def test_rawframe_folder_with_template(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    original = frames(t=5)
    for i, f in enumerate(original):
        Image.fromarray(f).save(folder / f"frame_{i:03d}.png")
    (folder / "notes.txt").write_text("not a frame")
    video = open_video(folder, frame_template="frame_{:03d}.png", start_index=0)
    assert video.num_frames == 5
    assert torch.equal(video.get([4, 0]), torch.from_numpy(original[[4, 0]]).permute(0, 3, 1, 2))
    assert open_video(folder, frame_template="frame_{:03d}.png", start_index=0, num_frames=3).num_frames == 3
    with pytest.raises(VideoDecodeError, match="frames"):
        open_video(folder)  # default img_00001.jpg names: nothing matches
    with pytest.raises(VideoDecodeError):  # the list says 6 frames, the 6th is missing
        open_video(folder, frame_template="frame_{:03d}.png", start_index=0, num_frames=6).get([5])


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated"])
def test_broken_inputs_raise_video_decode_error_naming_path_and_cause(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a text file, not a video\n")
    elif kind == "truncated":
        write_video(tmp_path / "full.mp4", np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), np.uint8))
        data = (tmp_path / "full.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError) as info:
        open_video(path).get([0])
    err = info.value
    assert err.path == str(path) and err.cause is not None and isinstance(err, RuntimeError)
    assert str(path) in str(err) and len(str(err)) > len(str(path)) + 20


def test_truncated_faststart_file_fails_at_read_time(tmp_path):
    # With the index at the front, a cut file can open and then fail while decoding later frames.
    import av

    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for f in np.random.default_rng(1).integers(0, 255, (30, 32, 32, 3), np.uint8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.97)])
    with pytest.raises(VideoDecodeError):
        video = open_video(path)
        video.get(range(video.num_frames))


def test_indices_are_validated():
    video = TensorSource(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(IndexError):
        video.get([4])
    with pytest.raises(IndexError):
        video.get([-1])
    with pytest.raises(IndexError):
        video.get([])


def test_write_video_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))


# ------------------------------------------------------------------ untrusted files (issue 9)
def _gif(path, colours, size=(24, 36)):
    from PIL import Image
    images = [Image.new("RGB", size[::-1], c) for c in colours]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


def test_animated_gif_reads_every_frame(tmp_path):
    """decord recognises a GIF and then fails on it ("broken metadata"); PyAV reads it."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0), (0, 0, 0)]
    _gif(tmp_path / "anim.gif", colours)
    video = open_video(tmp_path / "anim.gif")
    assert video.num_frames == len(colours) and video.fps == pytest.approx(10)
    got = video.get_all()
    assert got.shape == (5, 3, 24, 36)
    assert torch.equal(got[:, :, 5, 5], torch.tensor(colours, dtype=torch.uint8))
    scaled = open_video(tmp_path / "anim.gif", short_side=12)
    assert scaled.get([4, 1]).shape == (2, 3, 12, 18) and scaled.stored_size == (24, 36)


def test_short_side_decodes_straight_to_the_model_size(tmp_path):
    """Frames come out of the decoder at the size the transform needs (no full-size frames in memory),
    and look like the full-size frames resized."""
    import torch.nn.functional as F

    original = frames(t=6, h=64, w=96)
    write_video(tmp_path / "v.mp4", original, crf=0)
    video = open_video(tmp_path / "v.mp4", short_side=32)
    assert video.stored_size == (64, 96) and video.decoded_size == (32, 48)
    got = video.get([5, 0])
    assert got.shape == (2, 3, 32, 48)
    full = open_video(tmp_path / "v.mp4").get([5, 0]).float()
    assert (got.float() - F.interpolate(full, size=(32, 48), mode="bilinear", antialias=True)).abs().mean() < 3
    assert open_video(tmp_path / "v.mp4", short_side=128).get([0]).shape == (1, 3, 64, 96)  # never scaled up


def test_rotated_video_is_scaled_upright(tmp_path):
    """decord scales 90°-rotated videos into garbage; those go through PyAV, turned as decord turns them."""
    import av

    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8, options={"crf": "0"})
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        for f in frames(t=4, h=32, w=64):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    upright = open_video(path).get([2]).float()  # decord, full size: (1, 3, 64, 32)
    video = open_video(path, short_side=16)
    assert upright.shape == (1, 3, 64, 32) and video.stored_size == (64, 32) and video.decoded_size == (32, 16)
    got = video.get([2]).float()
    assert got.shape == (1, 3, 32, 16)
    assert (got - torch.nn.functional.avg_pool2d(upright, 2)).abs().mean() < 6


def test_keyframes_predict_decode_work_and_deadline_stops(tmp_path):
    """frames_to_decode counts what a seek decodes (keyframe -> frame); a past deadline stops at once."""
    from zeroi2v.data.decode import DecodeTimeout

    write_video(tmp_path / "k.mp4", frames(t=12), options={"x264-params": "keyint=4:min-keyint=4:scenecut=0"})
    video = open_video(tmp_path / "k.mp4", short_side=16)
    assert video._reader.get_key_indices() == [0, 4, 8]
    assert video.frames_to_decode([9, 5, 6]) == 2 + 1 + 2  # 4..5, then 6, then 8..9
    assert video.frames_to_decode([3]) == 4
    with pytest.raises(DecodeTimeout, match="ran out of time after 0 of 2 frames"):
        video.get([1, 2], deadline=time.monotonic() - 1)
    assert video.get([1, 2], deadline=time.monotonic() + 60).shape == (2, 3, 16, 24)


def test_write_video_streams_an_iterable(tmp_path):
    write_video(tmp_path / "g.mp4", (f for f in frames(t=5)), crf=0)
    assert open_video(tmp_path / "g.mp4").get_all().shape == (5, 3, 32, 48)
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "bad.mp4", iter([frames(t=1)[0], frames(t=1, w=64)[0]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.mp4"]  # no half-written file


def test_decord_log_stays_off_stderr_and_becomes_the_reason(tmp_path, capfd):
    """decord's C++ logger prints "ERROR opening: ..." on fd 2 whatever ffmpeg's log level is."""
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all\n" * 10)
    capfd.readouterr()
    with pytest.raises(VideoDecodeError) as info:
        open_video(bad)
    assert capfd.readouterr().err == ""
    assert info.value.reason == "Invalid data found when processing input"
    from zeroi2v.data.untrusted import decord_log
    with decord_log():
        os.write(2, b"someone else's line\n")  # other writers' output is kept
    assert capfd.readouterr().err == "someone else's line\n"


def test_decoder_internals_never_reach_messages():
    internal = ("[06:44:47] /github/workspace/src/video/ffmpeg/filter_graph.cc:61: Check failed: "
                "avfilter_graph_create_filter(&buffersrc_ctx_, buffersrc, \"in\", args, NULL, "
                "filter_graph_.get()) >= 0 (-22 vs. 0) : Cannot create buffer source\n\nStack trace:\n  [bt] (0) x")
    err = VideoDecodeError("/srv/uploads/abc/clip.mp4", RuntimeError(internal))
    assert str(err) == "cannot decode video '/srv/uploads/abc/clip.mp4': Cannot create buffer source"
    from zeroi2v.data.untrusted import clean_reason
    assert clean_reason("[06:44:47] /a/b/video_reader.cc:270: [/tmp/x/anim.gif] Failed to measure "
                        "duration/frame-count due to broken metadata.") == \
        "Failed to measure duration/frame-count due to broken metadata."
    assert clean_reason("[1:2:3] x.cc:9: Check failed: fmt_ctx != nullptr:") == "the decoder rejected the stream"
    assert clean_reason("reading /srv/uploads/abc/clip.mp4 failed", "/srv/uploads/abc/clip.mp4") == \
        "reading clip.mp4 failed"
