"""encode_schedule and its callback on tiny SD 1.x and SDXL pipelines, against denoising loops written by
hand with the conditioning each step should get under A1111's rule.

A1111 (``modules/sd_samplers_cfg_denoiser.py``) picks the conditioning with
``reconstruct_cond_batch(c, self.step)``, ``self.step`` counting denoiser calls from 0: call ``i`` uses the
first schedule entry whose ``end_at_step >= i``. For the prompt below with 5 steps, A1111's schedules are
``[[2, cat], [5, dog]]``, ``[[1, red], [2, blue], [3, red], [4, blue], [5, red]]`` and, for the negative,
``[[3, blurry], [5, sharp]]`` (0.6 * 5 = 3), so the texts per step, written out by hand, are EXPECTED.
"""

from __future__ import annotations

import pytest
import torch

from sdclip.conditioning.conditioner import TextConditioner
from sdclip.conditioning.schedules import encode_schedule
from sdclip.errors import PromptError

PROMPT = "a [cat:dog:2] in [red|blue] light"
NEGATIVE = "[blurry:sharp:0.6]"
STEPS = 5
EXPECTED = [  # step (from 0) -> (prompt, negative)
    ("a cat in red light", "blurry"),
    ("a cat in red light", "blurry"),
    ("a cat in blue light", "blurry"),
    ("a dog in red light", "blurry"),
    ("a dog in blue light", "sharp"),
]
# What a schedule counted from 1 (step i using the entry for i + 1) would give: the off-by-one to catch.
SHIFTED = EXPECTED[1:] + [("a dog in red light", "sharp")]


SECOND = "a [red|blue] light"
SECOND_EXPECTED = ["a red light", "a red light", "a blue light", "a red light", "a blue light"]


def _rows(texts_per_step, rows, second=None):
    """Per step, the (prompts, negatives) of every row; ``second`` gives the second prompt's rows."""
    out = []
    for i, (prompt, negative) in enumerate(texts_per_step):
        prompts = [prompt] * rows if second is None else [prompt] * (rows // 2) + [SECOND_EXPECTED[i]] * (rows // 2)
        out.append((prompts, [negative] * rows))
    return out


def _hand_loop(pipe, cond, texts_per_step, *, guidance, rows, sdxl, seed=0):
    """The pipeline's denoising loop, written out, with the conditioning given per step (texts per row)."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(STEPS)
    latents = pipe.prepare_latents(rows, 4, 32, 32, torch.float32, torch.device("cpu"), generator)
    latents = latents * scheduler.init_noise_sigma
    guided = guidance > 1
    time_ids = None
    if sdxl:
        time_ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=torch.float32,
                                          text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            prompts, negatives = texts_per_step[i]
            encoded = cond.encode(prompts, negatives)  # encoded on its own, not by the schedule
            embeds, pooled = encoded.prompt_embeds, encoded.pooled_prompt_embeds
            model_input = latents
            if guided:
                embeds = torch.cat([encoded.negative_prompt_embeds, embeds])
                pooled = torch.cat([encoded.negative_pooled_prompt_embeds, pooled])
                model_input = torch.cat([latents] * 2)
            model_input = scheduler.scale_model_input(model_input, t)
            added = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(model_input), 1)} if sdxl else None
            noise = pipe.unet(model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
            if guided:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance * (text - uncond)
            latents = scheduler.step(noise, t, latents, eta=0.0).prev_sample
    return latents


def _pipeline_run(pipe, kwargs, *, guidance, per_prompt=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(**kwargs, num_inference_steps=STEPS, guidance_scale=guidance, height=32, width=32,
                num_images_per_prompt=per_prompt, generator=generator, output_type="latent").images


@pytest.fixture(scope="module")
def sd_cond(sd_pipe):
    return TextConditioner.from_pipeline(sd_pipe)


def test_schedule_entries_and_starts(sd_cond):
    schedule = encode_schedule(sd_cond, PROMPT, NEGATIVE, steps=STEPS)
    per_step = [(schedule.texts[schedule.index_at(i)]["prompt"][0], schedule.texts[schedule.index_at(i)]["negative_prompt"][0])
                for i in range(STEPS)]  # fmt: skip
    assert per_step == EXPECTED
    assert schedule.starts[0] == 0 and len(schedule.conditionings) == len(schedule.ends) == len(schedule.starts)
    shapes = {tuple(c.prompt_embeds.shape) for c in schedule.conditionings}
    assert shapes == {(1, 77, 128)}


@pytest.mark.slow
@pytest.mark.parametrize(("guidance", "encode_n", "pipe_n", "prompts"), [
    (7.5, 1, 1, [PROMPT]),
    (1.0, 1, 1, [PROMPT]),  # no classifier-free guidance: prompt_embeds alone
    (7.5, 2, 1, [PROMPT, SECOND]),  # num_images_per_prompt given to encode_schedule
    (7.5, 1, 2, [PROMPT]),  # num_images_per_prompt given to the pipeline
])  # fmt: skip
def test_sd_pipeline_matches_hand_loop(sd_pipe, sd_cond, guidance, encode_n, pipe_n, prompts):
    schedule = encode_schedule(sd_cond, prompts, NEGATIVE, steps=STEPS, num_images_per_prompt=encode_n)
    got = _pipeline_run(sd_pipe, schedule.pipeline_kwargs(), guidance=guidance, per_prompt=pipe_n)
    rows = len(prompts) * encode_n * pipe_n
    assert got.shape[0] == rows
    second = SECOND if len(prompts) > 1 else None
    expected = _hand_loop(sd_pipe, sd_cond, _rows(EXPECTED, rows, second), guidance=guidance, rows=rows, sdxl=False)
    shifted = _hand_loop(sd_pipe, sd_cond, _rows(SHIFTED, rows, second), guidance=guidance, rows=rows, sdxl=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - shifted).abs().max() > 1e-3  # the test tells the two countings apart


@pytest.mark.slow
def test_sdxl_pipeline_matches_hand_loop(sdxl_pipe):
    cond = TextConditioner.from_pipeline(sdxl_pipe)
    schedule = encode_schedule(cond, PROMPT, NEGATIVE, steps=STEPS)
    assert schedule.tensor_inputs == ["prompt_embeds", "add_text_embeds"]
    got = _pipeline_run(sdxl_pipe, schedule.pipeline_kwargs(), guidance=5.0)
    expected = _hand_loop(sdxl_pipe, cond, _rows(EXPECTED, 1), guidance=5.0, rows=1, sdxl=True)
    shifted = _hand_loop(sdxl_pipe, cond, _rows(SHIFTED, 1), guidance=5.0, rows=1, sdxl=True)
    # SDXL's encoders give the schedule's batch of six texts and the loop's pairs results that differ in
    # the last bits (~1e-7); five UNet steps carry that to ~2e-5, so the image tolerance is 1e-4 here and
    # the conditioning itself is compared per step at 1e-6.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - shifted).abs().max() > 1e-2
    for i, (prompt, negative) in enumerate(EXPECTED):
        direct = cond.encode(prompt, negative)
        at = schedule.conditioning_at(i)
        for name in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"):
            torch.testing.assert_close(getattr(at, name), getattr(direct, name), atol=1e-6, rtol=1e-6)


def test_each_distinct_text_encoded_once(sd_pipe):
    cond = TextConditioner.from_pipeline(sd_pipe, cache_size=0)
    rows = []
    hook = cond.text_encoder.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    try:
        schedule = encode_schedule(cond, [PROMPT, PROMPT], NEGATIVE, steps=STEPS)
    finally:
        hook.remove()
    distinct = {text for texts in EXPECTED for text in texts}
    assert rows == [len(distinct)]  # one model call, each distinct text once
    assert len(schedule.conditionings) == 5 and schedule.conditionings[0].prompt_embeds.shape[0] == 2


def test_no_schedule_means_no_callback(sd_cond):
    schedule = encode_schedule(sd_cond, "a (plain:1.2) prompt", "blurry", steps=STEPS)
    assert schedule.callback() is None and len(schedule.conditionings) == 1
    assert sorted(schedule.pipeline_kwargs()) == ["negative_prompt_embeds", "prompt_embeds"]
    direct = sd_cond.encode("a (plain:1.2) prompt", "blurry", syntax="a1111")
    torch.testing.assert_close(schedule.conditionings[0].prompt_embeds, direct.prompt_embeds, atol=0, rtol=0)
    # a syntax without schedules reads brackets as written
    plain = encode_schedule(sd_cond, PROMPT, steps=STEPS, syntax="comfy")
    assert len(plain.conditionings) == 1 and plain.texts[0]["prompt"] == (PROMPT,)


def test_callback_refuses_missing_tensor_input(sd_cond):
    schedule = encode_schedule(sd_cond, PROMPT, steps=STEPS)
    with pytest.raises(PromptError, match=r"^callback_on_step_end_tensor_inputs: the schedule's callback needs "
                                          r"'prompt_embeds'; pass callback_on_step_end_tensor_inputs="):
        schedule.callback()(object(), 1, None, {"latents": torch.zeros(1)})


def test_callback_refuses_a_pipeline_batch_that_does_not_fit(sd_cond):
    schedule = encode_schedule(sd_cond, [PROMPT, PROMPT], steps=STEPS)
    with pytest.raises(PromptError, match=r"^prompt_embeds: the pipeline holds \(3, 77, 128\), which does not fit "
                                          r"the schedule's conditioning \(2, 77, 128\); run the pipeline with"):
        schedule.callback()(object(), 1, None, {"prompt_embeds": torch.zeros(3, 77, 128)})


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_steps_must_be_a_positive_integer(sd_cond, steps):
    with pytest.raises(PromptError, match=r"^steps: expected an integer >= 1 \(the pipeline's num_inference_steps\)"):
        encode_schedule(sd_cond, PROMPT, steps=steps)


@pytest.mark.parametrize(("prompt", "expected"), [
    (PROMPT, [prompt for prompt, _ in EXPECTED]),
    (SECOND, SECOND_EXPECTED),
    ("a plain (cat:1.2)", ["a plain (cat:1.2)"] * STEPS),
])  # fmt: skip
def test_parse_schedule_shows_each_steps_text_and_its_tokens(sd_cond, prompt, expected):
    entries = sd_cond.parse_schedule(prompt, steps=STEPS, syntax="a1111")
    per_step = {step: text for steps, text, _ in entries for step in steps}
    assert [per_step[i] for i in range(STEPS)] == expected
    for _, text, tokens in entries:
        reference = sd_cond.parse(text, syntax="a1111")
        assert [(t.text, t.weight) for t in tokens] == [(t.text, t.weight) for t in reference]


def test_parse_schedule_of_a_syntax_without_schedules_is_one_entry(sd_cond):
    [(steps, text, tokens)] = sd_cond.parse_schedule("a [cat:dog:2]", steps=STEPS, syntax="plain")
    assert (list(steps), text) == (list(range(STEPS)), "a [cat:dog:2]")
    assert [t.text for t in tokens] == [t.text for t in sd_cond.parse("a [cat:dog:2]")]
