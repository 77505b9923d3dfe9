"""The Gradio demo: the backend's input checks (no browser) and the page itself in Chromium (Playwright)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

from zeroi2v.data.decode import write_video  # noqa: E402
from zeroi2v.demo import DemoBackend, InputError, find_examples, launch, resolve_checkpoint, sniff_container  # noqa: E402
from zeroi2v.merge import merge_adapters, save_merged  # noqa: E402
from zeroi2v.model import create_model  # noqa: E402

CLASSES = ["moves left", "moves right", "moves up", "moves down", "stays", "blinks"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _moving_square(t: int, h: int, w: int, step: int = 2, colour=(255, 80, 0)) -> np.ndarray:
    frames = np.full((t, h, w, 3), 20, np.uint8)
    for i in range(t):
        x = (step * i) % (w - 16)
        frames[i, h // 2 - 8:h // 2 + 8, x:x + 16] = colour
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A merged micro checkpoint with an examples/ folder beside it, and good and bad uploads."""
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=len(CLASSES), num_frames=8,
                         offsets="1x1,-1x1,0x4", class_names=CLASSES)
    ckpt = save_merged(merge_adapters(model), root / "run" / "merged",
                       extra={"class_names": CLASSES, "facts": {"gflops": {"merged": 0.0123}}})
    up = root / "uploads"
    out = {"ckpt": ckpt, "example": root / "run" / "examples" / "square_right.mp4",
           "good": up / "good.mp4", "good2": up / "portrait_clip.mp4", "corrupt": up / "corrupt.mp4",
           "empty": up / "empty.mp4", "one": up / "one_frame.mp4", "text": up / "notes.txt",
           "long": up / "long.mp4", "renamed_text": up / "fake.mp4"}
    write_video(out["example"], _moving_square(16, 48, 64))
    write_video(out["good"], _moving_square(24, 64, 64, step=3, colour=(40, 200, 60)))
    write_video(out["good2"], _moving_square(20, 80, 48, step=1, colour=(50, 90, 245)))
    out["corrupt"].write_bytes(out["good"].read_bytes()[:400])  # header only: opens, no frames
    out["empty"].write_bytes(b"")
    write_video(out["one"], _moving_square(1, 32, 32))
    out["text"].write_text("not a video\n" * 20)
    out["renamed_text"].write_text("#EXTM3U\n#EXT-X-VERSION:3\nfile:///etc/hostname\n")
    write_video(out["long"], _moving_square(60, 16, 32))
    return out


@pytest.fixture(scope="module")
def backend(files) -> DemoBackend:
    return DemoBackend(files["ckpt"], warmup=False)


# ------------------------------------------------------------------------------------ no browser
def test_backend_analyses_a_good_video(backend, files):
    r = backend.analyse(files["good"], clips=2)
    assert r["probs"].shape == (len(CLASSES),) and abs(float(r["probs"].sum()) - 1) < 1e-5
    assert 0 <= r["target_class"] < len(CLASSES)
    assert r["target_class"] == int(np.argmax(r["probs"]))  # default: explain the top-1 class
    assert r["indices"].shape == (2, 8) and r["indices"].max() < 24
    for g in ("frames", "spatial", "temporal", "all"):
        img = r["strips"][g]
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > 4 * img.shape[0]
    assert set(r["timings"]) == {"decode", "inference", "cam", "total"}
    assert all(v >= 0 for v in r["timings"].values())
    # an explicit class and block are honoured
    r2 = backend.analyse(files["good"], target=CLASSES[3], block=0, clips=1)
    assert r2["target_class"] == 3 and r2["block"] == 0


@pytest.mark.parametrize("key, phrase", [
    ("corrupt", "cannot be read as a video"),
    ("empty", "empty (0 bytes)"),
    ("one", "has 1 frame"),
    ("text", "not a video file"),
    ("renamed_text", "not a video file"),
])
def test_backend_rejects_bad_input_readably(backend, files, key, phrase):
    with pytest.raises(InputError) as e:
        backend.analyse(files[key])
    msg = str(e.value)
    assert phrase in msg
    assert files[key].name in msg
    assert "Traceback" not in msg and str(files[key].parent) not in msg  # no stack, no server path
    # the next good upload still works
    assert backend.analyse(files["good"])["probs"].shape == (len(CLASSES),)


def test_backend_limits(files):
    small = DemoBackend(files["ckpt"], warmup=False, max_frames=50, max_file_size=10_000, max_side=60)
    with pytest.raises(InputError, match="60 frames; the limit is 50"):
        small.analyse(files["long"])
    with pytest.raises(InputError, match="64x64 pixels; the limit is 60"):
        small.analyse(files["good"])
    big = files["long"].with_name("padded.mp4")
    big.write_bytes(files["good"].read_bytes() + b"\0" * 20_000)
    with pytest.raises(InputError, match=r"padded.mp4` is 2\d.\d KB; the limit is 9.8 KB"):
        small.analyse(big)
    short = DemoBackend(files["ckpt"], warmup=False, max_seconds=5)  # 60 frames at 8 fps = 7.5 s
    with pytest.raises(InputError, match="lasts 8 s; the limit is 5 s"):
        short.analyse(files["long"])
    with pytest.raises(InputError, match="test views"):
        small.analyse(files["long"], clips=99)
    with pytest.raises(InputError, match="block"):
        small.analyse(files["long"], block=7)
    with pytest.raises(InputError, match="unknown class"):
        small.analyse(files["long"], target="no such class")


def test_block_without_temporal_heads_says_so(files, tmp_path):
    torch.manual_seed(0)
    model = create_model(backbone="zeroi2v-micro", num_classes=3, num_frames=8, offsets=["1x1,-1x1,0x4", "0x6"])
    ckpt = save_merged(merge_adapters(model), tmp_path / "merged", extra={"class_names": ["a", "b", "c"]})
    b = DemoBackend(ckpt, warmup=False)
    r = b.analyse(files["good"], block=1)
    assert r["strips"]["temporal"] is None and r["temporal"] is None
    assert "no temporal heads" in r["messages"]["temporal"]
    assert r["strips"]["spatial"] is not None and r["strips"]["all"] is not None
    assert b.analyse(files["good"], block=0)["strips"]["temporal"] is not None
    assert "layer 1: `{0x6}`" in b.facts


def test_examples_and_checkpoint_resolution(files, backend, tmp_path, monkeypatch):
    assert backend.examples == {"square_right.mp4": files["example"].resolve()}  # the folder beside it
    cfg = {"examples": ["../../uploads/good.mp4", "missing.mp4", "../../uploads/notes.txt",
                        "examples/square_right.mp4"]}  # the last relative to the checkpoint's parent
    found = find_examples(files["ckpt"], cfg)
    assert found == {"good.mp4": files["good"].resolve(), "square_right.mp4": files["example"].resolve()}
    assert sniff_container(files["good"]) == "MP4/MOV" and sniff_container(files["text"]) is None
    monkeypatch.chdir(tmp_path)  # no runs/quickstart/merged here
    with pytest.raises(FileNotFoundError, match="make quickstart"):
        resolve_checkpoint(None)
    with pytest.raises(FileNotFoundError, match="zeroi2v merge"):
        resolve_checkpoint(tmp_path)
    assert "Extra cost vs the image model: 0" in backend.facts and "0.0123" in backend.facts
    assert "{1x1,-1x1,0x4}" in backend.facts


# ---------------------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_has(page, text: str, timeout_s: float = 60) -> None:
    page.wait_for_function("t => { const e = document.querySelector('#status'); return e && e.innerText.includes(t); }",
                           arg=text, timeout=timeout_s * 1000)


def _upload(page, path: Path) -> None:
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.set_input_files("#upload input[type=file]", str(path))


def _assert_result(page) -> None:
    top5 = page.inner_text("#top5")
    shown = [c for c in CLASSES if c in top5]
    assert len(shown) >= 5, f"top-5 should list 5 class names, got {top5!r}"
    for elem in ("frames", "cam-spatial", "cam-temporal", "cam-all"):
        try:  # the status text can arrive a moment before the images have loaded
            page.wait_for_function("id => { const i = document.querySelector('#' + id + ' img');"
                                   " return i && i.getAttribute('src') && i.complete && i.naturalWidth > 0; }",
                                   arg=elem, timeout=15_000)
        except Exception:
            pytest.fail(f"no loaded image in #{elem}")
        img = page.locator(f"#{elem} img").first
        assert img.evaluate("i => i.naturalWidth > 4 * i.naturalHeight"), f"#{elem} is not a strip of frames"
    assert "decode" in page.inner_text("#timing") and "Grad-CAM" in page.inner_text("#timing")


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning")
def test_app_in_browser(files):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium; see `make browser-deps`)")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`make browser-deps`) to run the browser test")
    from playwright.sync_api import sync_playwright

    port = _free_port()
    demo = launch(files["ckpt"], host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1150})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
                page.wait_for_selector("#upload input[type=file]", state="attached", timeout=30_000)
                assert "Extra cost vs the image model: 0" in page.inner_text("#facts")

                page.click("#example input")  # an example, picked by name
                page.get_by_role("option", name="square_right.mp4").click()
                _status_has(page, "square_right.mp4: explaining")
                _assert_result(page)

                _upload(page, files["good"])  # an upload
                _status_has(page, "good.mp4: explaining")
                _assert_result(page)

                page.click("#target input")  # explain another class, same video
                page.get_by_role("option", name="moves up").click()
                page.click("#analyse")
                _status_has(page, "good.mp4: explaining moves up")
                _assert_result(page)

                _upload(page, files["corrupt"])  # a corrupt MP4: readable error, no stack trace
                _status_has(page, "Error:")
                status = page.locator("#status")
                assert status.is_visible()
                text = status.inner_text()
                assert "corrupt.mp4" in text and "cannot be read as a video" in text
                assert "Traceback" not in page.content()
                assert page.locator("#cam-temporal img").count() == 0  # stale results are cleared

                _upload(page, files["good2"])  # and the next good one works, explaining its own top-1
                _status_has(page, "portrait_clip.mp4: explaining")
                _assert_result(page)
                top1 = next(line.strip() for line in page.inner_text("#top5").splitlines() if line.strip() in CLASSES)
                assert f"explaining {top1} " in page.inner_text("#status")

                art = ROOT / "test-artifacts"
                art.mkdir(exist_ok=True)
                page.screenshot(path=str(art / "app.png"), full_page=True)
                assert (art / "app.png").stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        demo.close()


# ------------------------------------------------------------- the model card names no server path
def test_model_card_and_page_config_name_a_local_backbone_not_its_path(tmp_path):
    """A checkpoint merged from a ``local-dir:`` backbone, as save_merged wrote it before format 2 (the
    folder's path in model.backbone): neither the facts nor Gradio's /config data show that path."""
    import json

    from zeroi2v.demo import build_app, facts_markdown
    from zeroi2v.backbones import create_visual, save_local_dir
    from zeroi2v.merge import load_merged

    torch.manual_seed(0)
    visual, cfg = create_visual("zeroi2v-micro")
    folder = tmp_path / "srv" / "secret-place" / "image_model"
    model = create_model(backbone=save_local_dir(visual, cfg, folder), num_classes=3, num_frames=4)
    ckpt = save_merged(merge_adapters(model), tmp_path / "merged", extra={"class_names": ["a", "b", "c"]})
    config = json.loads((ckpt / "config.json").read_text())
    for version, backbone in ((2, config["model"]["backbone"]), (1, f"local-dir:{folder}")):
        config["version"], config["model"]["backbone"] = version, backbone
        (ckpt / "config.json").write_text(json.dumps(config))
        facts = facts_markdown(load_merged(ckpt), config)
        assert "image_model (local folder)" in facts and "secret-place" not in facts, facts
    page = json.dumps(build_app(ckpt, warmup=False).get_config_file(), default=repr)  # callbacks: by name
    assert "image_model (local folder)" in page and "secret-place" not in page and str(tmp_path) not in page


# ------------------------------------------------------------------ hostile uploads (issue 9)
@pytest.fixture(scope="module")
def hostile(files) -> dict[str, Path]:
    """Uploads that cost more than their size: large frames, elongated frames, a GIF."""
    from PIL import Image
    up = files["good"].parent
    out = {"big": up / "big.mp4", "thin": up / "thin.mp4", "gif": up / "anim.gif"}
    write_video(out["big"], _moving_square(40, 128, 128), crf=30)
    write_video(out["thin"], _moving_square(10, 16, 256, step=4), crf=30)
    images = [Image.fromarray(f) for f in _moving_square(12, 40, 60)]
    images[0].save(out["gif"], save_all=True, append_images=images[1:], duration=80, loop=0)
    return out


def test_upload_is_decoded_at_the_model_size(backend, hostile):
    """D2: frames come out of the decoder at the model's 32 px, never at the upload's 128 px."""
    source, work = backend.open_checked(hostile["big"], clips=2)
    assert source.stored_size == (128, 128) and source.get([0, 39]).shape == (2, 3, 32, 32)
    assert work >= 16 * 128 * 128  # at least the 16 sampled frames, at their stored size
    assert backend.analyse(hostile["big"], clips=2)["frames"].shape == (8, 32, 32, 3)


def test_limits_bound_frame_area_decoded_bytes_and_decode_work(files, hostile):
    """D2: the long side alone lets a thin video blow up when its short side is scaled to the model's."""
    ckpt = files["ckpt"]
    with pytest.raises(InputError, match=r"`thin.mp4` is 256x16 pixels: scaled to the model's 32-pixel short side "
                                         r"a frame would be 512x32 = 16,384 pixels; the limit is 10,000 pixels"):
        DemoBackend(ckpt, warmup=False, max_frame_pixels=10_000).analyse(hostile["thin"])
    with pytest.raises(InputError, match=r"`big.mp4`: 5 views need 120.0 KB of decoded frames; the limit is "
                                         r"100.0 KB. Use fewer views"):
        DemoBackend(ckpt, warmup=False, max_decoded_bytes=100 * 1024).analyse(hostile["big"], clips=5)
    with pytest.raises(InputError, match=r"`big.mp4` would need .* pixels decoded for 1 view; the limit is "
                                         r"100,000 pixels. Trim it"):
        DemoBackend(ckpt, warmup=False, max_decode_work=100_000).analyse(hostile["big"])
    with pytest.raises(InputError, match=r"`good.mp4` took more than 0 s to decode \(the limit per request\)"):
        DemoBackend(ckpt, warmup=False, max_decode_seconds=0).analyse(files["good"])


def test_a_large_upload_never_holds_up_a_small_clip(files, hostile):
    """D3: one large decode at a time, beside small clips; a second large one is refused at once."""
    from zeroi2v.demo import Busy
    b = DemoBackend(files["ckpt"], warmup=False, small_work=200_000)
    assert b.open_checked(files["good"])[1] <= 200_000 < b.open_checked(hostile["big"])[1]
    b._large.acquire()  # as while a large upload decodes
    try:
        assert b.analyse(files["good"])["probs"].shape == (len(CLASSES),)
        with pytest.raises(Busy, match="`big.mp4` is a large video and another large video is being analysed; "
                                       "try again in a minute"):
            b.analyse(hostile["big"])
    finally:
        b._large.release()
    assert b.analyse(hostile["big"])["probs"].shape == (len(CLASSES),)


def test_gif_upload_is_analysed(backend, hostile):
    """D13: a valid animated GIF was sniffed as GIF and then refused by decord."""
    r = backend.analyse(hostile["gif"], clips=2)
    assert r["video"]["num_frames"] == 12 and r["frames"].shape == (8, 32, 32, 3)


@pytest.fixture(scope="module")
def server(files):
    """The demo served on 127.0.0.1, keeping accepted uploads 2 s after their last analysis."""
    port = _free_port()
    demo = launch(files["ckpt"], host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True, keep_uploads=2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def _call(url: str, upload=None, example=None, client=None):
    from gradio_client import Client
    client = client or Client(url, download_files=False, verbose=False)
    return client.predict(upload, example, "Top-1 prediction", 1, 1, api_name="/analyse")


@pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning")
def test_concurrent_identical_requests_all_download(server):
    """D10: Gradio names result images by their bytes and rewrote a shared file in place while another
    client downloaded it ("peer closed connection"). 20 identical requests: every image downloads whole."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from PIL import Image

    def one(_):
        r = _call(server, example="square_right.mp4")
        assert r[0].startswith("**Result:**"), r[0]
        got = []
        for image in r[2:6]:
            response = httpx.get(image["url"], timeout=30)
            response.raise_for_status()
            with Image.open(io.BytesIO(response.content)) as picture:
                picture.load()  # a cut-off PNG raises here
                got.append((image["path"], picture.size))
        return got

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    paths = [p for r in results for p, _ in r]
    assert len(set(paths)) == len(paths) == 80  # no request's image file is shared, so none is rewritten
    assert len({size for r in results for _, size in r}) == 1  # every strip whole: the same size every time


@pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning")
def test_uploads_are_deleted(server, files):
    """D11: uploads stayed in Gradio's folder forever, refused ones included."""
    import httpx
    from gradio_client import Client

    def upload(path: Path) -> dict:
        (stored,) = httpx.post(server + "/gradio_api/upload", files=[("files", (path.name, path.read_bytes()))]).json()
        return {"path": stored, "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}

    client = Client(server, download_files=False, verbose=False)  # one session
    refused = upload(files["text"])
    assert "not a video file" in _call(server, upload=refused, client=client)[0]
    assert not os.path.exists(refused["path"])  # refused: deleted at once
    first = upload(files["good"])
    assert "`good.mp4`: explaining" in _call(server, upload=first, client=client)[0]
    assert "`good.mp4`: explaining" in _call(server, upload=first, client=client)[0]  # kept: explained again
    second = upload(files["good2"])
    assert "`portrait_clip.mp4`: explaining" in _call(server, upload=second, client=client)[0]
    assert not os.path.exists(first["path"])  # replaced: deleted
    assert os.path.exists(second["path"])
    deadline = time.monotonic() + 20
    while os.path.exists(second["path"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(second["path"])  # keep_uploads seconds after its last analysis: deleted
