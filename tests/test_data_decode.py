"""Reading videos and rawframe folders; every kind of broken input becomes VideoDecodeError."""

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
