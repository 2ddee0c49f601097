"""Every source kind loads, gives the same embeddings, and bad sources fail with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdclip import ModelSourceError, PickleRefusedError, TextConditioner, WeightsNotAvailableError
from sdclip.models.devices import resolve_dtype
from sdclip.models.loading import load_text_encoder, tokenizer_for_source
from sdclip.models.sources import resolve_source

PROMPTS = ["a photo of a cat", "", "portrait, (masterpiece:1.2)"]


@pytest.fixture(scope="module")
def reference(sd_pipe):
    """diffusers' own encoding of PROMPTS on the pipeline the fixtures were saved from."""
    with torch.no_grad():
        return sd_pipe.encode_prompt(PROMPTS, "cpu", 1, False)[0]


@pytest.mark.parametrize(
    "kind",
    ["pipeline", "bare_text_encoder_folder", "hub_style_folder", "single_file", "single_file_no_text_model_prefix"],
)
def test_every_source_kind_gives_the_same_embeddings(text_sources, reference, kind):
    cond = TextConditioner.from_pretrained(text_sources[kind], device="cpu")
    assert (cond.encode(PROMPTS).prompt_embeds - reference).abs().max().item() < 1e-5
    assert cond.text_encoder.config._attn_implementation == "sdpa"
    assert not cond.text_encoder.training
    assert not any(p.requires_grad for p in cond.text_encoder.parameters())


def test_single_file_config_is_inferred_from_shapes(text_sources, sd_pipe):
    loaded = load_text_encoder(text_sources["single_file"], device="cpu")
    config, expected = loaded.model.config, sd_pipe.text_encoder.config
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "max_position_embeddings", "vocab_size", "hidden_act"):
        assert getattr(config, name) == getattr(expected, name), name


def test_single_file_reads_only_text_encoder_tensors(text_sources, monkeypatch):
    import sdclip.models.checkpoint as ckpt

    read = []
    original = ckpt.read_safetensors
    monkeypatch.setattr(ckpt, "read_safetensors", lambda path, keys: read.extend(keys) or original(path, keys))
    load_text_encoder(text_sources["single_file"], device="cpu")
    assert read and all(key.startswith("cond_stage_model.transformer.") for key in read)


def test_hub_id_loads_from_the_local_cache_offline(text_sources, tmp_path, monkeypatch, reference):
    """A hub id resolves through huggingface_hub's cache (laid out as a download leaves it)."""
    import shutil

    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-sd"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(text_sources["pipeline"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    cond = TextConditioner.from_pretrained("someone/tiny-sd", device="cpu", local_files_only=True)
    assert (cond.encode(PROMPTS).prompt_embeds - reference).abs().max().item() < 1e-5


def test_hub_id_offline_without_cache_says_how_to_get_the_weights(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError, match=(
        r"model 'openai/clip-vit-large-patch14': weights are not in the local Hugging Face cache .*"
        r"hf download openai/clip-vit-large-patch14 --local-dir weights/clip-vit-large-patch14"
    )):
        TextConditioner.from_pretrained("openai/clip-vit-large-patch14")


def test_pickle_checkpoints_are_refused_unless_allowed(sd_pipe, tmp_path, reference):
    path = tmp_path / "model.ckpt"
    state = {"cond_stage_model.transformer.text_model." + k: v for k, v in sd_pipe.text_encoder.state_dict().items()}
    torch.save({"state_dict": state}, path)
    with pytest.raises(PickleRefusedError, match=r"checkpoint '.*model.ckpt': pickle files .* pass allow_pickle=True"):
        TextConditioner.from_pretrained(path)
    cond = TextConditioner.from_pretrained(path, device="cpu", allow_pickle=True)
    assert (cond.encode(PROMPTS).prompt_embeds - reference).abs().max().item() < 1e-5


def test_pytorch_model_bin_folder_needs_allow_pickle(sd_pipe, tmp_path):
    folder = tmp_path / "bin-folder"
    sd_pipe.text_encoder.config.save_pretrained(folder)
    torch.save(sd_pipe.text_encoder.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(PickleRefusedError, match="pytorch_model.bin"):
        load_text_encoder(folder)
    assert load_text_encoder(folder, allow_pickle=True, device="cpu").model.config.hidden_size == 128


def test_the_folders_own_tokenizer_is_used(pipeline_folder, tmp_path):
    """An SD 2.x-style tokenizer pads with '!' (id 0): a folder's own files win over the shipped ones."""
    import shutil

    folder = tmp_path / "sd2-like"
    shutil.copytree(pipeline_folder, folder)
    config_path = folder / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["pad_token"] = "!"
    config_path.write_text(json.dumps(config))
    cond = TextConditioner.from_pretrained(folder, device="cpu")
    assert cond.tokenizer.pad_token_id == 0
    ids = cond.encode("a cat").prompt_ids[0].tolist()
    assert ids[:5] == [49406, 320, 2368, 49407, 0]


def test_tokenizer_for_source_loads_no_weights(text_sources):
    assert tokenizer_for_source(text_sources["single_file"]).model_max_length == 77
    assert tokenizer_for_source(None)("a cat").input_ids == [49406, 320, 2368, 49407]


def test_resolve_source_kinds(text_sources, clip_model_folder):
    assert resolve_source(text_sources["pipeline"]).kind == "pipeline"
    assert resolve_source(clip_model_folder).kind == "clip_folder"
    assert resolve_source(text_sources["single_file"]).kind == "single_file"


@pytest.mark.parametrize("name", ["fp16", "float16", "torch.float16", "half"])
def test_dtype_names(name):
    assert resolve_dtype(name, torch.device("cpu")) == torch.float16


def test_dtype_is_applied(pipeline_folder):
    cond = TextConditioner.from_pretrained(pipeline_folder, device="cpu", dtype="bf16")
    assert cond.encode("a cat").prompt_embeds.dtype == torch.bfloat16


# -- errors: one line, naming the input and what was expected -------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", r"model '.*missing': no such file or folder"),
        (lambda d: write(d / "model.onnx", "x"), r"unsupported file type '.onnx'; expected .safetensors"),
        (lambda d: write(d / "corrupt.safetensors", "not a safetensors file"),
         r"checkpoint '.*corrupt.safetensors': not a readable safetensors file"),
        (lambda d: write(d / "empty" / "readme.txt", "").parent,
         r"folder has no config.json or model_index.json; expected a CLIP model folder"),
        (lambda d: write(d / "unet" / "config.json", json.dumps({"_class_name": "UNet2DConditionModel"})).parent,
         r"describes an unknown model, expected a CLIP model"),
        (lambda d: write(d / "bert" / "config.json", json.dumps({"model_type": "bert", "architectures": ["BertModel"]})).parent,
         r"describes \['BertModel'\], expected a CLIP model"),
        (lambda d: write(d / "broken" / "config.json", "{not json").parent, r"config '.*config.json': not a readable JSON file"),
        (lambda d: write(d / "noweights" / "config.json", json.dumps({"model_type": "clip_text_model"})).parent,
         r"model folder '.*noweights': no weights found \(expected model.safetensors\)"),
    ],
)
def test_bad_sources_fail_with_a_clear_line(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(ModelSourceError, match=message) as info:
        TextConditioner.from_pretrained(source, device="cpu")
    assert "\n" not in str(info.value)


def test_a_checkpoint_without_a_text_encoder_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "unet-only.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelSourceError, match=r"no CLIP text encoder inside .* UNet- or VAE-only file"):
        TextConditioner.from_pretrained(path)


def test_weights_of_the_wrong_shape_are_named(sd_pipe, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "mismatch"
    sd_pipe.text_encoder.config.save_pretrained(folder)
    state = {k: v for k, v in sd_pipe.text_encoder.state_dict().items() if "layers.3." not in k}
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelSourceError, match=r"weights do not fit a CLIP model: missing \d+ tensors \(e.g. encoder.layers.3"):
        TextConditioner.from_pretrained(folder)


def test_pipeline_folder_without_the_subfolder(pipeline_folder):
    with pytest.raises(ModelSourceError, match=r"pipeline folder has no text_encoder_2/config.json"):
        TextConditioner.from_pretrained(pipeline_folder, subfolder="text_encoder_2")


@pytest.mark.parametrize(("value", "message"), [("fp8", r"dtype 'fp8': expected one of fp32, fp16, bf16")])
def test_bad_dtype(pipeline_folder, value, message):
    with pytest.raises(ModelSourceError, match=message):
        TextConditioner.from_pretrained(pipeline_folder, dtype=value)


def test_bad_device(pipeline_folder):
    with pytest.raises(ModelSourceError, match=r"device 'gpu0': not a torch device"):
        TextConditioner.from_pretrained(pipeline_folder, device="gpu0")
