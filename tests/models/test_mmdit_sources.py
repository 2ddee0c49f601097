"""SD3 / Flux encoders from every source kind give the same tensors: pipeline, folder, standalone files,
an SD3.5 single file; T5 straight into the requested dtype; the errors name the fix."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sdclip import ModelSourceError, PromptError, TextConditioner
from sdclip.models.t5 import load_t5, read_safetensors_as

pytestmark = pytest.mark.slow  # files of every layout, written and read back: end to end


def t5_tensors(model) -> dict[str, torch.Tensor]:
    """A T5EncoderModel's tensors as files keep them: one copy of the tied embedding."""
    return {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


@pytest.fixture(scope="module")
def files(sd3_pipe, flux_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("comfy")
    save_file({k: v.contiguous() for k, v in sd3_pipe.text_encoder.state_dict().items()}, folder / "clip_l.safetensors")
    save_file({k: v.contiguous() for k, v in sd3_pipe.text_encoder_2.state_dict().items()}, folder / "clip_g.safetensors")
    save_file(t5_tensors(sd3_pipe.text_encoder_3), folder / "t5xxl_fp32.safetensors")
    save_file({k: v.contiguous() for k, v in flux_pipe.text_encoder.state_dict().items()}, folder / "flux_clip_l.safetensors")
    save_file(t5_tensors(flux_pipe.text_encoder_2), folder / "flux_t5.safetensors")
    sd3_pipe.tokenizer_3.save_pretrained(folder / "tokenizer_3")
    flux_pipe.tokenizer_2.save_pretrained(folder / "flux_tokenizer_2")
    single = {"model.diffusion_model.x": torch.zeros(1)}
    for name, model in (("clip_l", sd3_pipe.text_encoder), ("clip_g", sd3_pipe.text_encoder_2)):
        single.update({f"text_encoders.{name}.transformer.{k}": v.contiguous() for k, v in model.state_dict().items()})
    single.update({f"text_encoders.t5xxl.transformer.{k}": v for k, v in t5_tensors(sd3_pipe.text_encoder_3).items()})
    save_file(single, folder / "sd3.5_single.safetensors")
    return folder


def encoded(cond, **kwargs):
    return cond.encode(["a photo of a cat", "a dog"], "blurry", syntax="a1111", max_sequence_length=16, **kwargs)


@pytest.mark.parametrize("source", ["files", "sd3.5_single_file", "sd3.5_single_file_via_from_files"])
def test_sd3_sources_give_the_pipelines_tensors(sd3_pipe, files, source):
    if source == "files":
        cond = TextConditioner.from_files(clip_l=files / "clip_l.safetensors", clip_g=files / "clip_g.safetensors",
                                          t5=files / "t5xxl_fp32.safetensors", t5_tokenizer=files / "tokenizer_3",
                                          device="cpu")
    elif source == "sd3.5_single_file":
        cond = TextConditioner.from_pretrained(files / "sd3.5_single.safetensors", device="cpu",
                                               t5_tokenizer=files / "tokenizer_3")
    else:
        single = files / "sd3.5_single.safetensors"
        cond = TextConditioner.from_files(clip_l=single, clip_g=single, t5=single, t5_tokenizer=files / "tokenizer_3",
                                          device="cpu")
    expected, out = encoded(TextConditioner.from_pipeline(sd3_pipe)), encoded(cond)
    for name, tensor in expected.tensors().items():
        assert (getattr(out, name) - tensor).abs().max().item() < 1e-6, name


def test_flux_files_give_the_pipelines_tensors(flux_pipe, files):
    cond = TextConditioner.from_files(clip_l=files / "flux_clip_l.safetensors", t5=files / "flux_t5.safetensors",
                                      family="flux", t5_tokenizer=files / "flux_tokenizer_2", device="cpu")
    expected, out = encoded(TextConditioner.from_pipeline(flux_pipe)), encoded(cond)
    for name, tensor in expected.tensors().items():
        assert (getattr(out, name) - tensor).abs().max().item() < 1e-6, name


def test_sd3_files_without_t5_give_zeros_for_it(sd3_pipe, files):
    cond = TextConditioner.from_files(clip_l=files / "clip_l.safetensors", clip_g=files / "clip_g.safetensors",
                                      device="cpu")
    out = cond.encode("a cat", max_sequence_length=8)
    assert out.prompt_embeds.shape == (1, 77 + 8, 4096) and out.prompt_embeds[:, 77:].abs().max() == 0


def test_a_t5_file_without_a_tokenizer_says_which_folder_to_pass(files):
    with pytest.raises(ModelSourceError, match=r"^t5 '.*t5xxl_fp32.safetensors': no T5 tokenizer given; pass t5_tokenizer= "
                       r"a folder with tokenizer.json or spiece.model \(a SD3 pipeline's tokenizer_3/, Flux's tokenizer_2/\)$"):
        TextConditioner.from_files(clip_l=files / "clip_l.safetensors", clip_g=files / "clip_g.safetensors",
                                   t5=files / "t5xxl_fp32.safetensors", device="cpu")
    with pytest.raises(ModelSourceError, match=r"sd3.5_single.safetensors': no T5 tokenizer given; pass t5_tokenizer="):
        TextConditioner.from_pretrained(files / "sd3.5_single.safetensors", device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "sdxl"}, r"^family: expected 'sd3' or 'flux', got 'sdxl'$"),
        ({"clip_g": None}, r"^clip_g: SD3 conditions on CLIP-L and bigG; pass clip_g= the clip_g.safetensors file$"),
        ({"family": "flux", "t5": None}, r"^t5: Flux conditions on T5; pass t5= the t5xxl .safetensors file"),
        ({"clip_l": "missing.safetensors"}, r"^clip_l 'missing.safetensors': expected a .safetensors file, found nothing at"),
        ({"clip_g": "T5"}, r"^clip_g '.*t5xxl_fp32.safetensors': no CLIP text encoder inside"),
    ],
)
def test_from_files_errors(files, kwargs, message):
    arguments = {"clip_l": files / "clip_l.safetensors", "clip_g": files / "clip_g.safetensors", **kwargs}
    if arguments["clip_g"] == "T5":
        arguments["clip_g"] = files / "t5xxl_fp32.safetensors"
    with pytest.raises(ModelSourceError, match=message):
        TextConditioner.from_files(**arguments, device="cpu")


def test_t5_device_and_bad_devices(sd3_pipeline_folder):
    cond = TextConditioner.from_pretrained(sd3_pipeline_folder, device="cpu", devices={"t5": "cpu"})
    assert cond.t5.model.device.type == "cpu"
    with pytest.raises(PromptError, match=r"^devices: expected a dict with the key 't5' \(e.g. \{'t5': 'cpu'\}\), got \{'clip': 'cpu'\}$"):
        TextConditioner.from_pretrained(sd3_pipeline_folder, device="cpu", devices={"clip": "cpu"})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_t5_is_read_straight_into_the_dtype(sd3_pipe, files, dtype):
    tensors = read_safetensors_as(files / "t5xxl_fp32.safetensors", dtype=dtype)
    assert {t.dtype for t in tensors.values()} == {dtype}
    model = load_t5(files / "t5xxl_fp32.safetensors", device=torch.device("cpu"), dtype=dtype)
    reference = sd3_pipe.text_encoder_3.state_dict()
    assert all(torch.equal(p, reference[k].to(dtype)) for k, p in model.state_dict().items())
    assert model.encoder.embed_tokens is model.shared


def test_a_file_without_t5_inside_is_named(files):
    with pytest.raises(ModelSourceError, match=r"clip_l.safetensors': no T5 encoder inside \(expected 'shared.weight'"):
        load_t5(files / "clip_l.safetensors", device=torch.device("cpu"), dtype=torch.float32)
