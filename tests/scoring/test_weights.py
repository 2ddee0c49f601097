"""Metric weights from a hub file: ``load_scorer("aesthetic" | "hpsv2", "hf://owner/name/file")`` (and the
published defaults) resolved by ``huggingface_hub`` from a real cache layout, offline (``HF_HUB_OFFLINE=1``,
``HF_HUB_CACHE`` at a folder laid out here). The scorer must hold the file's tensors and score exactly as the
local-path load of the same file, whose scores tests/scoring/test_aesthetic.py and test_hpsv2.py check
against float64 references; every failure is one line naming the metric, what was tried and where the
published weights are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdclip.errors import ModelSourceError, PickleRefusedError, WeightsNotAvailableError
from sdclip.models import hub_files
from sdclip.scoring import load_scorer
from sdclip.scoring.clip_scorer import ClipScorer
from sdclip.scoring.multi import MultiScorer
from sdclip.testing import put_in_hub_cache, random_openclip_state_dict

AESTHETIC_REPO, AESTHETIC_FILE = "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metric-weights")
    generator = torch.Generator().manual_seed(5)
    head = {f"layers.{i}.{kind}": torch.randn(*((o, n) if kind == "weight" else (o,)), generator=generator)
            for i, n, o in ((0, 96, 16), (2, 16, 1)) for kind in ("weight", "bias")}
    torch.save(head, folder / "head.pth")  # as LAION published it: a plain state dict
    hps = random_openclip_state_dict(seed=2)
    save_file(hps, folder / "hps.safetensors")  # the local copy the hub pickle's scores must equal
    torch.save({"state_dict": hps, "epoch": 1}, folder / "HPS_v2.1_compressed.pt")
    return folder, head


@pytest.fixture(scope="module")
def clip(tiny_clip_folder):
    return ClipScorer.from_pretrained(tiny_clip_folder, device="cpu")


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(7)
    return [Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(64, 64), (80, 70)]]


@pytest.mark.parametrize("source", [
    None,  # the published default, hf://camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth
    f"hf://{AESTHETIC_REPO}/{AESTHETIC_FILE}",
    f"{AESTHETIC_REPO}/{AESTHETIC_FILE}",
    "hf://someone/heads@v2/l14/head.pth",
])  # fmt: skip
def test_aesthetic_head_from_the_hub_cache(source, files, hub_cache, clip, images):
    folder, head = files
    put_in_hub_cache(hub_cache, AESTHETIC_REPO, AESTHETIC_FILE, folder / "head.pth")
    put_in_hub_cache(hub_cache, "someone/heads", "l14/head.pth", folder / "head.pth", ref="v2", commit="c" * 40)
    scorer = load_scorer("aesthetic", source, clip_model=clip)  # .pth without allow_pickle: weights_only loader
    for (weight, bias), index in zip(scorer.head, (0, 2)):
        assert torch.equal(weight, head[f"layers.{index}.weight"]) and torch.equal(bias, head[f"layers.{index}.bias"])
    local = load_scorer("aesthetic", folder / "head.pth", clip_model=clip)
    torch.testing.assert_close(scorer.score(images), local.score(images), rtol=0, atol=0)


def test_hpsv2_published_pickle_from_the_hub_cache(files, hub_cache, images):
    """The default source, hf://xswu/HPSv2/HPS_v2.1_compressed.pt, with allow_pickle (a .safetensors needs none)."""
    folder, _ = files
    put_in_hub_cache(hub_cache, "xswu/HPSv2", "HPS_v2.1_compressed.pt", folder / "HPS_v2.1_compressed.pt")
    scorer = load_scorer("hpsv2", allow_pickle=True, device="cpu")
    local = load_scorer("hpsv2", folder / "hps.safetensors", device="cpu")
    torch.testing.assert_close(scorer.score(images, "a cat"), local.score(images, "a cat"), rtol=0, atol=0)


def test_a_hub_pickle_is_refused_before_it_is_downloaded(hub_cache, monkeypatch):
    monkeypatch.setattr("sdclip.scoring.weights.download_hub_file",
                        lambda *a, **k: pytest.fail("downloaded a refused pickle"))
    with pytest.raises(PickleRefusedError, match=r"^checkpoint 'hf://xswu/HPSv2/HPS_v2\.1_compressed\.pt': pickle "
                       r"files \(\.ckpt, \.pt, \.pth, \.bin\) can run code when loaded; pass allow_pickle=True"):
        load_scorer("hpsv2", device="cpu")


def test_an_uncached_default_names_the_metric_what_was_tried_and_the_published_weights(hub_cache, clip):
    put_in_hub_cache(hub_cache, AESTHETIC_REPO, "README.md", b"a cached repository without the head")
    with pytest.raises(WeightsNotAvailableError, match=(
        r"^metric 'aesthetic': 'hf://camenduru/improved-aesthetic-predictor/sac\+logos\+ava1-l14-linearMSE\.pth': "
        r"not in the local Hugging Face cache, and offline mode \(HF_HUB_OFFLINE / local_files_only\); on a machine "
        r"with network run `hf download camenduru/improved-aesthetic-predictor sac\+logos\+ava1-l14-linearMSE\.pth` "
        r"\(or pass the downloaded file's path\); the published weights are hf://camenduru/improved-aesthetic-"
        r"predictor/sac\+logos\+ava1-l14-linearMSE\.pth \(a mirror of https://github\.com/christophschuhmann/"
        r"improved-aesthetic-predictor/blob/main/sac\+logos\+ava1-l14-linearMSE\.pth\)$"
    )):
        load_scorer("aesthetic", clip_model=clip)
    with pytest.raises(WeightsNotAvailableError, match=r"^metric 'hpsv2': 'hf://xswu/HPSv2/HPS_v2\.1_compressed\.pt'"
                       r": not in the local Hugging Face cache, .*; the published weights are hf://xswu/HPSv2/"
                       r"HPS_v2\.1_compressed\.pt \(https://huggingface\.co/xswu/HPSv2\)$"):
        load_scorer("hpsv2", allow_pickle=True, device="cpu")


def test_a_malformed_reference_names_the_metric(clip):
    with pytest.raises(ModelSourceError, match=r"^metric 'aesthetic': weights 'hf://head\.pth': expected "
                       r"hf://owner/name/path/in/repo .*; the published weights are hf://camenduru/"):
        load_scorer("aesthetic", "hf://head.pth", clip_model=clip)


def test_multi_scorer_passes_local_files_only_to_the_head(files, hub_cache, tiny_clip_folder, monkeypatch):
    """local_files_only=True reaches the head's hub file when aesthetic shares clip's backbone: no probe."""
    put_in_hub_cache(hub_cache, AESTHETIC_REPO, AESTHETIC_FILE, files[0] / "head.pth")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_files, "hub_reachable", lambda: pytest.fail("probed the hub despite local_files_only"))
    multi = MultiScorer.from_pretrained(["clip", "aesthetic"], sources={"clip": tiny_clip_folder},
                                        local_files_only=True, device="cpu")
    assert multi.vision_passes == 1 and torch.equal(multi.scorers["aesthetic"].head[1][0], files[1]["layers.2.weight"])


def test_a_missing_path_that_reads_as_a_hub_file_says_both_were_tried(hub_cache, clip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotAvailableError, match=r"^metric 'aesthetic': no local file 'out/heads/head\.pth', "
                       r"and as a hub file 'hf://out/heads/head\.pth': not in the local Hugging Face cache, "):
        load_scorer("aesthetic", "out/heads/head.pth", clip_model=clip)
