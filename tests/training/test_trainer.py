"""End to end: ``train`` from a config and from a folder, reproducibility, the locks, the output folder's loaders."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sdclip.errors import TrainingDataError, TrainingError
from sdclip.testing import TINY_TEXT, TINY_VISION, random_clip_model, save_clip_folder
from sdclip.training import TrainConfig, read_log, train

COLOURS = ["red", "blue", "green", "white", "black", "yellow", "purple", "orange"]
SMALL = {"text_config": {**TINY_TEXT, "num_hidden_layers": 2}, "projection_dim": 96,
         "vision_config": {**TINY_VISION, "patch_size": 16, "image_size": 32}}  # fmt: skip


def _pairs(n: int = 16) -> list[tuple[Image.Image, str]]:
    generator = torch.Generator().manual_seed(1)
    pairs = []
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        image = Image.new("RGB", (40, 36), colour)
        noise = (torch.rand(10, 10, generator=generator) * 255).to(torch.uint8).numpy()
        image.paste(Image.fromarray(noise).convert("RGB"), (i % 20, 3))  # every image differs
        pairs.append((image, f"a {colour} square number {i}"))
    return pairs


def _state(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_from_config_is_bit_reproducible_and_writes_a_folder_every_loader_takes(tmp_path):
    options = dict(model=SMALL, batch_size=8, epochs=2, image_size=32, progress=False, lr=1e-3, val_fraction=0.25,
                   labels=COLOURS, eval_every=1, plot=False)  # fmt: skip
    first = train(_pairs(), out=tmp_path / "a", **{**options, "plot": True})
    second = train(_pairs(), out=tmp_path / "b", num_workers=2, **options)  # decoding in worker processes
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert first.steps == 2 and first.samples == 16 and first.train_pairs == 12 and first.val_pairs == 4
    assert all(torch.equal(a[k], b[k]) for k in a) and second.steps == 2  # bit for bit
    # the model moved away from its seeded initialisation, and another seed starts elsewhere
    from sdclip.training.model_setup import starting_model

    start = starting_model(SMALL, image_size=32, seed=0).model.state_dict()
    other = starting_model(SMALL, image_size=32, seed=1).model.state_dict()
    assert not torch.equal(start["text_model.final_layer_norm.weight"], a["text_model.final_layer_norm.weight"])
    assert not torch.equal(start["visual_projection.weight"], other["visual_projection.weight"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 32
    rows = read_log(tmp_path / "a" / "train_log.csv")
    assert [row["step"] for row in rows] == [1, 2] and all("t2i_r1" in row and "zero_shot_acc" in row for row in rows)
    assert (tmp_path / "a" / "train_curves.png").stat().st_size > 0

    # every loader takes the folder; features agree with transformers' own loading of it
    from transformers import CLIPModel

    from sdclip import ClipScorer, TextConditioner, clip

    reference = CLIPModel.from_pretrained(tmp_path / "a").eval()
    scorer = ClipScorer.from_pretrained(tmp_path / "a", device="cpu", dtype="fp32")
    ids = scorer.tokenizer(["a red square"], return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=ids).pooler_output
    torch.testing.assert_close(scorer.embed_texts(["a red square"]), expected, atol=1e-5, rtol=1e-5)
    model, preprocess = clip.load(str(tmp_path / "a"), device="cpu")
    assert preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    conditioner = TextConditioner.from_pretrained(tmp_path / "a", device="cpu", dtype="fp32")
    with torch.no_grad():
        hidden = reference.text_model(input_ids=conditioner.tokenizer("a red square", padding="max_length",
                                                                     max_length=77, return_tensors="pt").input_ids)
    torch.testing.assert_close(conditioner.encode("a red square").prompt_embeds[0], hidden.last_hidden_state[0],
                               atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("lock", "source_kind"), [("text_encoder", "folder"), ("image", "single_file")])
def test_locks_keep_the_frozen_part_bit_identical(tmp_path, lock, source_kind):
    from safetensors.torch import save_file

    model = random_clip_model({**TINY_TEXT, "num_hidden_layers": 2}, {**TINY_VISION, "image_size": 64})
    source = save_clip_folder(model, tmp_path / "source")
    if source_kind == "single_file":  # a full CLIP checkpoint in one file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    start = source if source_kind == "folder" else tmp_path / "clip.safetensors"
    train(_pairs(8), model=start, out=tmp_path / "out", batch_size=8, lock=lock, progress=False, lr=1e-2, plot=False)
    before, after = _state(source), _state(tmp_path / "out")
    frozen = ("text_model.",) if lock == "text_encoder" else ("vision_model.", "visual_projection.")
    assert sorted(before) == sorted(after)
    for key in before:
        same = torch.equal(before[key], after[key])
        assert same if key.startswith(frozen) else True, key
    trained = "visual_projection.weight" if lock == "text_encoder" else "text_projection.weight"
    assert not torch.equal(before[trained], after[trained])
    assert not torch.equal(before["logit_scale"], after["logit_scale"])


@pytest.mark.slow
def test_refuses_an_existing_model_unless_told(tmp_path):
    done = train(_pairs(4), model=SMALL, out=tmp_path, batch_size=4, image_size=32, progress=False, plot=False,
                 val_data=_pairs(6)[4:], labels=COLOURS)  # fmt: skip
    assert done.val_pairs == 2 and done.metrics["val_pairs"] == 2 and "zero_shot_acc" in done.metrics
    with pytest.raises(TrainingError, match=r"already holds a model or checkpoints; pass overwrite=True"):
        train(_pairs(4), model=SMALL, out=tmp_path, batch_size=4, image_size=32, progress=False)
    with pytest.raises(TrainingError, match=r"image_size: the model's vision tower takes 32 px images, got image_size"):
        train(_pairs(4), model=tmp_path, out=tmp_path / "again", image_size=64, progress=False)


@pytest.mark.parametrize(("options", "message"), [
    ({"batch_size": 0}, r"batch_size: expected an integer >= 1, got 0"),
    ({"lr": -1.0}, r"lr: expected a positive finite number, got -1.0"),
    ({"lock": "both"}, r"lock: expected one of none, image, text, text_encoder, got 'both'"),
    ({"mixed_precision": "fp8"}, r"mixed_precision: expected one of no, bf16, fp16, got 'fp8'"),
    ({"val_fraction": 1.0}, r"val_fraction: expected a number in \[0, 1\), got 1.0"),
    ({"label_template": "a photo"}, r"label_template: expected a '\{\}' where the label goes"),
    ({"epoch": 2}, r"train\(\): unknown option\(s\) epoch; expected fields of TrainConfig"),
    ({"batch_size": 8, "group_size": 3}, r"group_size=3: expected a divisor of batch_size \(8\), so that groups"),
    ({"group_size": 0}, r"group_size: expected an integer >= 1, got 0"),
])  # fmt: skip
def test_options_are_checked_with_one_line_errors(options, message):
    with pytest.raises(TrainingError, match=message):
        TrainConfig.from_options(None, **options)


def _plain_transformers_step(initial: dict, pairs, *, micro: list[list[int]], lr: float, eps: float,
                             weight_decay: float) -> dict[str, torch.Tensor]:
    """One AdamW step of transformers' own CLIPModel(return_loss=True) over ``micro``-batches (losses averaged),
    with transformers' CLIPImageProcessor and 77-token padding: an independent statement of a training step."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from sdclip import load_tokenizer

    model = CLIPModel(CLIPConfig(**SMALL))
    model.load_state_dict(initial)
    model.train()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tokenizer = load_tokenizer()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=eps)
    for indices in micro:
        pixels = processor([pairs[i][0] for i in indices], return_tensors="pt").pixel_values
        texts = [pairs[i][1] for i in indices]
        ids = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
        (model(input_ids=ids, pixel_values=pixels, return_loss=True).loss / len(micro)).backward()
    optimizer.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize(("grad_accum", "batch_size", "checkpointing", "group_size"),
                         [(1, 16, False, 1), (2, 8, True, 1), (2, 8, False, 4)])  # fmt: skip
def test_one_step_equals_a_plain_transformers_loop(tmp_path, grad_accum, batch_size, checkpointing, group_size):
    from sdclip.training.model_setup import starting_model

    pairs = _pairs(16)
    # eps >> |gradient| makes AdamW's first step lr/eps * gradient: the update then shows the gradient's size
    options = dict(lr=1.0, eps=1e3, weight_decay=0.1)
    initial = starting_model(SMALL, seed=0).model.state_dict()
    groups = torch.randperm(16 // group_size, generator=torch.Generator().manual_seed(0)).tolist()  # seed + epoch 0
    order = [g * group_size + k for g in groups for k in range(group_size)]  # whole groups of consecutive pairs
    micro = [order[i * batch_size:(i + 1) * batch_size] for i in range(grad_accum)]
    expected = _plain_transformers_step(initial, pairs, micro=micro, **options)
    train(pairs, model=SMALL, out=tmp_path, batch_size=batch_size, grad_accum=grad_accum, max_steps=1, progress=False,
          gradient_checkpointing=checkpointing, group_size=group_size, plot=False, **options)  # fmt: skip
    got = _state(tmp_path)
    moved = 0.0
    for name, value in expected.items():
        if name in got:  # (position_ids buffers are not saved)
            delta, reference = got[name] - initial[name], value - initial[name]
            torch.testing.assert_close(delta, reference, atol=2e-7, rtol=1e-3, msg=name)
            moved = max(moved, float(reference.abs().max()))
    assert moved > 1e-5  # the step did move the weights


@pytest.mark.slow
def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    import shutil

    options = dict(model=SMALL, batch_size=4, max_steps=4, save_every=2, progress=False, plot=False, lr=1e-3)
    train(_pairs(12), out=tmp_path / "run", **options)
    full = _state(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_4")  # as if killed after step 3
    (tmp_path / "run" / "model.safetensors").unlink()
    resumed = train(_pairs(12), out=tmp_path / "run", resume=True, **options)
    assert resumed.steps == 4 and resumed.samples == 16
    again = _state(tmp_path / "run")
    assert all(torch.equal(full[k], again[k]) for k in full)
    assert [row["step"] for row in read_log(tmp_path / "run" / "train_log.csv")] == [1, 2, 3, 4]
    with pytest.raises(TrainingError, match=r"resume: checkpoint '.*step_4' was made with batch_size=4, this run has "
                                             r"batch_size=2; the batches would not line up"):  # fmt: skip
        train(_pairs(12), out=tmp_path / "run", resume=True, **{**options, "batch_size": 2})


@pytest.mark.slow
def test_bf16_mixed_precision_trains_float32_weights_close_to_fp32(tmp_path):
    options = dict(model=SMALL, batch_size=8, max_steps=1, progress=False, plot=False, lr=1.0, eps=1e3)
    train(_pairs(8), out=tmp_path / "fp32", **options)
    train(_pairs(8), out=tmp_path / "bf16", mixed_precision="bf16", **options)
    from sdclip.training.model_setup import starting_model

    initial = starting_model(SMALL, seed=0).model.state_dict()
    fp32, bf16 = _state(tmp_path / "fp32"), _state(tmp_path / "bf16")
    assert all(v.dtype == torch.float32 for v in bf16.values())
    a = torch.cat([(fp32[k] - initial[k]).flatten() for k in fp32])
    b = torch.cat([(bf16[k] - initial[k]).flatten() for k in fp32])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.95 and not torch.equal(a, b)


@pytest.mark.slow
def test_bad_images_are_skipped_and_counted_and_all_bad_is_an_error(tmp_path):
    pairs = _pairs(5) + [(tmp_path / "missing.png", "a lost square")]
    result = train(pairs, model=SMALL, out=tmp_path / "ok", batch_size=6, epochs=2, progress=False, plot=False)
    assert result.steps == 2 and result.bad_images == 2 and result.samples == 10  # once per epoch
    with pytest.raises(TrainingDataError, match=r"data '<memory>': a whole epoch gave no batch of two or more"):
        train([(tmp_path / "missing.png", "x")] * 4, model=SMALL, out=tmp_path / "bad", batch_size=2, progress=False)
