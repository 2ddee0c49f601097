"""Fixtures: tiny random-weight CLIP models in the real architecture's shape, with the real tokenizer,
saved in every source layout sdclip loads. Built once per test session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*steps_offset.*")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from two threads, and on a busy 2-core machine OpenMP's spin-waits
    make them up to ~50x slower: every test runs on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache folder, offline: ``sdclip.testing.put_in_hub_cache`` fills it."""
    folder = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    from sdclip.models.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def sd_pipe():
    """A tiny StableDiffusionPipeline: random text encoder (4 layers, 2 heads of 64), shipped tokenizer."""
    from sdclip.testing import tiny_sd_pipeline

    return tiny_sd_pipeline()


@pytest.fixture(scope="session")
def sdxl_pipe():
    """A tiny StableDiffusionXLPipeline: random L/14- and bigG-shaped text encoders (tokenizer_2 pads with '!')."""
    from sdclip.testing import tiny_sdxl_pipeline

    return tiny_sdxl_pipeline()


@pytest.fixture(scope="session")
def sdxl_pipeline_folder(sdxl_pipe, model_dir) -> Path:
    folder = model_dir / "tiny-sdxl"
    sdxl_pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def pipeline_folder(sd_pipe, model_dir) -> Path:
    folder = model_dir / "tiny-sd"
    sd_pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_sources(sd_pipe, pipeline_folder, model_dir) -> dict[str, Path]:
    """The same text encoder weights in every layout a user may hand sdclip."""
    from sdclip.testing import save_hub_style_folder, save_sd1_single_file

    encoder = sd_pipe.text_encoder
    return {
        "pipeline": pipeline_folder,
        "bare_text_encoder_folder": pipeline_folder / "text_encoder",  # no tokenizer files: shipped one used
        "hub_style_folder": save_hub_style_folder(encoder, model_dir / "hub-style"),
        "single_file": save_sd1_single_file(encoder, model_dir / "sd1.safetensors"),
        "single_file_no_text_model_prefix": save_sd1_single_file(
            encoder, model_dir / "sd1-noprefix.safetensors", text_model_prefix=False
        ),
    }


@pytest.fixture(scope="session")
def conditioner(pipeline_folder):
    from sdclip import TextConditioner

    return TextConditioner.from_pretrained(pipeline_folder, device="cpu")


@pytest.fixture(scope="session")
def clip_model_folder(model_dir) -> Path:
    """A tiny full CLIPModel saved as transformers does (text + vision towers, projections)."""
    from sdclip.testing import random_clip_model

    folder = model_dir / "tiny-clip"
    random_clip_model().save_pretrained(folder)
    return folder


# -- tiny full CLIP models for scoring and sdclip.clip (64 px images, so the vision tower is cheap) --


@pytest.fixture(scope="session")
def tiny_vision_config() -> dict:
    """A tiny CLIP vision tower config: 64 px images in 16 px patches (16 patches + CLS)."""
    from sdclip.testing import TINY_VISION

    return {**TINY_VISION, "image_size": 64, "patch_size": 16}


@pytest.fixture(scope="session")
def tiny_clip_model(tiny_vision_config):
    """A tiny random full ``CLIPModel`` (TINY_TEXT text tower, ``tiny_vision_config`` vision tower), eval mode.

    Shared by the whole session: tests use it as the reference and must not change it."""
    from sdclip.testing import TINY_TEXT, random_clip_model

    return random_clip_model(TINY_TEXT, tiny_vision_config, seed=1)


@pytest.fixture(scope="session")
def tiny_clip_folder(tiny_clip_model, tmp_path_factory) -> Path:
    """``tiny_clip_model`` saved as a hub-style CLIP folder, with a 64 px ``preprocessor_config.json``."""
    from sdclip.testing import save_clip_folder

    return save_clip_folder(tiny_clip_model, tmp_path_factory.mktemp("tiny-clip-64"))


@pytest.fixture(scope="session")
def tiny_clip_processor():
    """transformers' ``CLIPImageProcessorPil`` for ``tiny_clip_folder`` (64 px): the preprocessing reference."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})


# -- SD3 / Flux (tiny CLIP-L, bigG and T5; see sdclip.testing_mmdit) ----------------------------------


@pytest.fixture(scope="session")
def sd3_pipe():
    """A tiny StableDiffusion3Pipeline: CLIP-L and bigG with projections, a 384-wide T5, a T5 tokenizer built here."""
    from sdclip.testing_mmdit import tiny_sd3_pipeline

    return tiny_sd3_pipeline()


@pytest.fixture(scope="session")
def flux_pipe():
    """A tiny FluxPipeline: CLIP-L (pooled), a 384-wide T5."""
    from sdclip.testing_mmdit import tiny_flux_pipeline

    return tiny_flux_pipeline()


@pytest.fixture(scope="session")
def sd3_pipeline_folder(sd3_pipe, model_dir) -> Path:
    folder = model_dir / "tiny-sd3"
    sd3_pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def flux_pipeline_folder(flux_pipe, model_dir) -> Path:
    folder = model_dir / "tiny-flux"
    flux_pipe.save_pretrained(folder)
    return folder
