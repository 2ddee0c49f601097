"""sdclip.scoring.gpu_decode and ClipScorer(gpu_decode=True) on the CPU: the fallbacks, and the GPU path's
bookkeeping through a stand-in decoder, against transformers' CLIPModel on CLIPImageProcessor pixels.

nvjpeg itself needs a GPU (``benchmarks/gpu_suite.py`` measures it and its score difference there).
Here a stand-in decodes the bytes the GPU decoder would get with Pillow, so everything around the
decoder (which files go to it, batching, merging its tensors back in order, falling back to the CPU
path for a batch it fails on) is checked against the reference.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from sdclip import ClipScorer, SdclipError
from sdclip.scoring.gpu_decode import decode_prepared, default_workers, gpu_jpeg_bytes, jpeg_decoder, jpeg_frame, stack_for_device
from sdclip.cli import main
from sdclip.testing import TINY_TEXT, TINY_VISION, random_clip_model, save_clip_folder
from sdclip import load_tokenizer

VISION = {**TINY_VISION, "image_size": 64, "patch_size": 16}
FAST_TOLERANCE = 0.05  # score units: the tensor path's tolerance (tests/test_scoring.py)


@pytest.fixture(scope="module")
def model():
    return random_clip_model(TINY_TEXT, VISION, seed=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six 96x80 smooth images: JPEG (baseline, progressive), PNG, in a mixed order."""
    folder = tmp_path_factory.mktemp("images")
    rs = np.random.RandomState(0)
    y, x = np.mgrid[0:80, 0:96]
    paths = []
    for index in range(6):
        base = np.stack([x * 2 + 10 * index, y * 3, (x + y) % 256], -1) + rs.randint(0, 20, (80, 96, 3))
        image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        path = folder / f"img{index}.{'png' if index % 3 == 2 else 'jpg'}"
        image.save(path, **({"quality": 90, "progressive": index == 1} if path.suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def reference_scores(model, paths, prompt):
    """transformers' CLIPModel on CLIPImageProcessor (PIL) pixels of the decoded files."""
    processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    pixels = processor(images=[Image.open(p) for p in paths], return_tensors="pt").pixel_values
    tokens = load_tokenizer()([prompt], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels)
    return 100 * (out.image_embeds * out.text_embeds).sum(-1)


class PillowStandIn:
    """Decodes what nvjpeg would get, with Pillow; fails the whole batch on a bad file, as nvjpeg does."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        self.batches.append(len(data))
        images = [Image.open(io.BytesIO(bytes(t.numpy()))).convert("RGB") for t in data]
        return [torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in images]


def with_stand_in(model, **options) -> tuple[ClipScorer, PillowStandIn]:
    scorer = ClipScorer(model, load_tokenizer(), preprocessing="fast", gpu_decode=True, **options)
    stand_in = PillowStandIn()
    scorer._jpeg_decode = stand_in  # what jpeg_decoder gives on a CUDA machine with torchvision
    return scorer, stand_in


# -- helpers --------------------------------------------------------------------------------------


def test_default_workers_follow_the_cores():
    import os

    assert default_workers() == max(1, min(32, len(os.sched_getaffinity(0))))
    assert ClipScorer(random_clip_model(TINY_TEXT, VISION), load_tokenizer()).workers == default_workers()


def test_stack_for_device_equals_torch_stack():
    hwc = [torch.randint(0, 256, (10, 12, 3), dtype=torch.uint8) for _ in range(3)]
    views = [t.permute(2, 0, 1) for t in hwc]  # what a decoded image becomes: channels-last views
    assert torch.equal(stack_for_device(views, torch.device("cpu")).contiguous(), torch.stack(views))
    chw = [torch.rand(3, 10, 12) for _ in range(2)]
    assert torch.equal(stack_for_device(chw, torch.device("cpu")), torch.stack(chw))


def jpeg_bytes(mode: str = "RGB", **options) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (40, 30)).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_jpeg_frame_reads_the_header():
    assert jpeg_frame(jpeg_bytes())[:5] == (0xC0, 8, 30, 40, 3)
    assert jpeg_frame(jpeg_bytes(progressive=True))[0] == 0xC2
    assert jpeg_frame(jpeg_bytes("L"))[4] == 1
    assert jpeg_frame(jpeg_bytes("CMYK"))[4:] == (4, True)  # Adobe marker, transform 0: stored as is
    assert jpeg_frame(b"\x89PNG\r\n\x1a\n") is None and jpeg_frame(jpeg_bytes()[:20]) is None


@pytest.mark.parametrize(("kind", "gpu"), [
    ("rgb", True), ("progressive", True), ("gray", False), ("cmyk", False), ("truncated", False), ("png", False),
    ("missing", False), ("over_pixel_limit", False),
])  # fmt: skip
def test_which_files_go_to_the_gpu_decoder(tmp_path, monkeypatch, kind, gpu):
    data = {"gray": jpeg_bytes("L"), "cmyk": jpeg_bytes("CMYK"), "progressive": jpeg_bytes(progressive=True),
            "truncated": jpeg_bytes()[:-40]}.get(kind, jpeg_bytes())  # fmt: skip
    path = tmp_path / "a.jpg"
    if kind == "png":
        Image.new("RGB", (4, 4)).save(path, "PNG")
    elif kind != "missing":
        path.write_bytes(data)
    if kind == "over_pixel_limit":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    result = gpu_jpeg_bytes(path)
    assert (result is not None) == gpu
    if gpu:
        assert result.dtype == torch.uint8 and bytes(result.numpy()) == data


def test_jpeg_decoder_is_none_without_cuda_or_torchvision(monkeypatch):
    assert jpeg_decoder("cpu") is None
    monkeypatch.setitem(sys.modules, "torchvision", None)  # torchvision not installed (or broken)
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    assert jpeg_decoder("cuda") is None


# -- ClipScorer: the fallback on this machine -----------------------------------------------------


def test_gpu_decode_falls_back_to_the_cpu_here(model, files):
    scorer = ClipScorer(model, load_tokenizer(), preprocessing="fast", gpu_decode=True, batch_size=4)
    assert scorer.gpu_decode is False
    scores = scorer.score(files, "a photo of a cat")
    assert (scores - reference_scores(model, files, "a photo of a cat")).abs().max().item() < FAST_TOLERANCE


def test_gpu_decode_needs_fast_preprocessing(model):
    with pytest.raises(SdclipError, match=r"gpu_decode: needs preprocessing='fast' \(GPU-decoded images are "
                       r"resized on the device\), got preprocessing='auto'"):
        ClipScorer(model, load_tokenizer(), gpu_decode=True)


# -- ClipScorer: the GPU path's bookkeeping, through the stand-in ---------------------------------


def test_gpu_path_scores_equal_transformers(model, files):
    scorer, stand_in = with_stand_in(model, batch_size=4)
    scores = scorer.score(files, "a photo of a cat")
    assert (scores - reference_scores(model, files, "a photo of a cat")).abs().max().item() < FAST_TOLERANCE
    assert stand_in.batches == [3, 1]  # batch [jpg, jpg, png, jpg] then [jpg, png]: JPEGs only, one call per batch


def test_exif_transpose_keeps_files_on_pillow(model, files):
    # nvjpeg ignores EXIF orientation: with exif_transpose the scorer decodes every file with Pillow
    assert ClipScorer(model, load_tokenizer(), preprocessing="fast", gpu_decode=True, exif_transpose=True).gpu_decode \
        is False
    scorer, stand_in = with_stand_in(model, batch_size=4, exif_transpose=True)
    scores = scorer.score(files, "a photo of a cat")
    assert (scores - reference_scores(model, files, "a photo of a cat")).abs().max().item() < FAST_TOLERANCE
    assert stand_in.batches == []


def test_a_batch_the_decoder_fails_on_goes_to_the_cpu_path(model, files, tmp_path):
    bad = tmp_path / "bad.jpg"
    data = bytearray(files[0].read_bytes())
    table = data.find(b"\xff\xdb")  # a quantization table with index 7 (0-3 allowed): the decoder gives up
    data[table + 4] = 0x07
    bad.write_bytes(bytes(data))
    assert gpu_jpeg_bytes(bad) is not None  # the header looks fine: it goes to the GPU decoder
    items = [files[0], bad, files[2], files[3]]
    scorer, stand_in = with_stand_in(model, batch_size=4)
    on_gpu = list(scorer.iter_scores(items, "a cat", errors="return"))
    cpu_scorer = ClipScorer(model, load_tokenizer(), preprocessing="fast", batch_size=4)
    on_cpu = list(cpu_scorer.iter_scores(items, "a cat", errors="return"))
    assert [b.errors for b in on_gpu] == [b.errors for b in on_cpu] and on_cpu[0].errors[1]
    good = [0, 2, 3]
    torch.testing.assert_close(on_gpu[0].scores[good], on_cpu[0].scores[good])


def test_decode_prepared_keeps_order_and_other_entries():
    decoded = torch.zeros(3, 2, 2, dtype=torch.uint8)
    prepared = [("pixels", "p0"), ("jpeg", ("a.jpg", b"x")), ("error", "e2"), ("jpeg", ("b.jpg", b"y"))]
    out = decode_prepared(prepared, lambda data: [decoded + len(data), decoded], None, start=0)
    assert [kind for kind, _ in out] == ["pixels", "raw", "error", "raw"] and out[1][1][0, 0, 0] == 2

    def failing(data):
        raise RuntimeError("nvjpeg: bad data")

    out = decode_prepared(prepared, failing, lambda path, index: ("error", f"{path}@{index}"), start=10)
    assert out == [("pixels", "p0"), ("error", "a.jpg@11"), ("error", "e2"), ("error", "b.jpg@13")]


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_workers_and_gpu_decode(model, files, tmp_path, capsys):
    folder = save_clip_folder(model, tmp_path / "clip")
    out = tmp_path / "s.jsonl"
    args = ["score", "--images", *map(str, files), "--prompt", "a cat", "--model", str(folder), "--device", "cpu",
            "--out", str(out), "--workers", "2", "--preprocessing", "fast", "--gpu-decode"]
    assert main(args) == 0
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    scores = torch.tensor([row["score"] for row in rows])
    assert (scores - reference_scores(model, files, "a cat")).abs().max().item() < FAST_TOLERANCE
    capsys.readouterr()
    assert main(args[:-3] + ["--gpu-decode", "--overwrite"]) == 2  # --out is not empty now
    assert "sdclip score: error: gpu_decode: needs preprocessing='fast'" in capsys.readouterr().err


def test_docstring_examples():
    import doctest

    from sdclip.scoring import gpu_decode

    result = doctest.testmod(gpu_decode)
    assert result.attempted > 0 and result.failed == 0
