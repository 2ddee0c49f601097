"""GPU suite, section 1: text conditioning, sdclip (eager and CUDA graphs) vs diffusers' encode_prompt.

Per model (SD 1.x: clip-vit-large-patch14's text tower; SDXL: that and OpenCLIP bigG's) and dtype:
build on the device, check that sdclip's tensors equal diffusers' within the dtype's tolerance, then
time the three contenders in turns (``_harness.interleaved_medians``) at batch 1, 8 and 64 (distinct
prompts, default negative, caches off) and on ``encode.py``'s realistic workload (requests of 4
images, one shared negative, a quarter repeated; caches on, cleared before each run).
"""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import torch

from _harness import NEGATIVE, interleaved_medians, make_prompt, realistic_requests

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# max |sdclip - diffusers| / max(1, max |diffusers|): sdclip batches prompt and negative together, so
# the GEMMs (and with graphs, padded buckets) differ in shape and round differently, never more
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2}
NAMES = {"sd1": ("prompt_embeds", "negative_prompt_embeds"),
         "sdxl": ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")}


def configs(kind: str, dry_run: bool) -> tuple[dict, ...]:
    from sdclip.testing import BIGG_TEXT, L14_TEXT, TINY_TEXT, TINY_TEXT_2

    if kind == "sd1":
        return (TINY_TEXT,) if dry_run else (L14_TEXT,)
    return (TINY_TEXT, TINY_TEXT_2) if dry_run else (L14_TEXT, BIGG_TEXT)


def build_pipe(kind: str, device: str, dry_run: bool) -> tuple[object, str | None]:
    """The diffusers pipeline around random real-shape encoders (built on ``device``, fp32), or, when
    diffusers does not import, a stand-in with the same attributes (sdclip alone is then timed)."""
    from sdclip import testing

    config = configs(kind, dry_run)
    make = testing.tiny_sd_pipeline if kind == "sd1" else testing.tiny_sdxl_pipeline
    error = None
    try:
        with torch.device(device):  # random init on the GPU: seconds instead of a minute on the CPU
            pipe = make(*config)
    except ImportError as exc:
        pipe, error = _stand_in_pipe(kind, config), f"diffusers unavailable: {exc}"
    except Exception:  # something in the pipeline does not build on the GPU: build on the CPU, move the encoders
        pipe = make(*config)
    for name in ("text_encoder", "text_encoder_2"):
        encoder = getattr(pipe, name, None)
        if encoder is not None:
            encoder.to(device)
            encoder.config._attn_implementation = "sdpa"
    return pipe, error


def _stand_in_pipe(kind: str, config: tuple[dict, ...]) -> SimpleNamespace:
    from sdclip import load_tokenizer
    from sdclip.testing import random_text_encoder

    pipe = SimpleNamespace(text_encoder=random_text_encoder(config[0]), tokenizer=load_tokenizer())
    if kind == "sdxl":
        tokenizer_2 = copy.deepcopy(load_tokenizer())
        tokenizer_2.pad_token = "!"  # as SDXL's tokenizer_2
        pipe.text_encoder_2 = random_text_encoder(config[1], projection=True, seed=1)
        pipe.tokenizer_2, pipe.config = tokenizer_2, {"force_zeros_for_empty_prompt": True}
    return pipe


def diffusers_encode(pipe, kind: str, device: str, prompts, negative=None, n: int = 1):
    with torch.no_grad():
        if kind == "sd1":
            return pipe.encode_prompt(prompts, device, n, True, negative)
        return pipe.encode_prompt(prompts, device=device, num_images_per_prompt=n, negative_prompt=negative)


def agreement(ours, theirs, kind: str, dtype: str) -> dict:
    """Worst difference over every tensor the pipeline takes, relative to the reference's scale."""
    worst = scale = 0.0
    for name, reference in zip(NAMES[kind], theirs, strict=False):
        worst = max(worst, (getattr(ours, name).float() - reference.float()).abs().max().item())
        scale = max(scale, reference.float().abs().max().item())
    relative = worst / max(1.0, scale)
    return {"max_abs_diff": worst, "relative": relative, "ok": relative <= TOLERANCE[dtype]}


def run(suite) -> None:
    plan = suite.plan
    for kind in ("sd1", "sdxl"):
        holder: dict = {}
        suite.case("text", f"{kind}-build", lambda: _build(holder, kind, plan))
        for dtype in plan.dtypes:
            suite.case("text", f"{kind}-{dtype}-check", lambda: _check(holder, kind, dtype, plan))
            for batch in plan.text_batches:
                suite.case("text", f"{kind}-{dtype}-batch{batch}", lambda: _batch(suite, holder, kind, dtype, batch))
            suite.case("text", f"{kind}-{dtype}-realistic", lambda: _realistic(suite, holder, kind, dtype))
        if kind == "sd1" and "pipe" in holder:
            suite.state["sd1_pipe"] = holder["pipe"]  # the profiles reuse it
        holder.clear()
    suite.case("text", "sd3", lambda: {"status": "skipped", "reason": "not available: sdclip has no SD3 conditioning"})


def _build(holder: dict, kind: str, plan) -> dict:
    pipe, error = build_pipe(kind, plan.device, plan.dry_run)
    holder.update(pipe=pipe, diffusers_error=error)
    params = sum(p.numel() for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None
                 for p in getattr(pipe, name).parameters())
    return {"encoder_params_m": round(params / 1e6, 1), "diffusers_error": error,
            "summary": f"{params / 1e6:.0f}M encoder parameters" + (f"; {error}" if error else "")}


def _conditioners(holder: dict, dtype: str) -> None:
    """Cast the encoders to ``dtype`` in place and make the eager and graphed conditioners on them."""
    from sdclip import TextConditioner

    pipe = holder["pipe"]
    if holder.get("dtype") != dtype:
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).to(DTYPES[dtype])
        holder["dtype"] = dtype
        for cache in (0, 256):  # cache off for the batches, on for the realistic workload
            suffix = "_cached" if cache else ""
            holder["eager" + suffix] = TextConditioner.from_pipeline(pipe, cache_size=cache)
            holder["graphs" + suffix] = TextConditioner.from_pipeline(pipe, cache_size=cache, cuda_graphs=True)


def _check(holder: dict, kind: str, dtype: str, plan) -> dict:
    _conditioners(holder, dtype)
    pipe, rng = holder["pipe"], random.Random(1)
    if holder["diffusers_error"]:
        raise RuntimeError(holder["diffusers_error"])
    result, worst = {}, 0.0
    for label, prompts in (("batch1", ["a photo of a cat"]), ("batch1_again", ["a red fox in the snow"]),
                           ("batch8", [make_prompt(rng) for _ in range(8)])):
        theirs = diffusers_encode(pipe, kind, plan.device, prompts, [NEGATIVE] * len(prompts))
        for name in ("eager", "graphs"):
            check = agreement(holder[name].encode(prompts, NEGATIVE), theirs, kind, dtype)
            result[f"{name}_{label}"] = check
            worst = max(worst, check["relative"])
    result["cuda_graph_status"] = holder["graphs"].cuda_graph_status
    result["all_ok"] = all(v["ok"] for k, v in result.items() if isinstance(v, dict) and "ok" in v)
    result["summary"] = (f"sdclip vs diffusers: worst relative difference {worst:.2e} (tolerance "
                         f"{TOLERANCE[dtype]:.0e}) {'ok' if result['all_ok'] else 'FAILED'}; graphs {result['cuda_graph_status']}")
    if not result["all_ok"]:
        result["status"] = "check_failed"
    return result


def _timed(suite, runs: dict, units: int, *, warmup: int = 1, repeats: int) -> dict:
    medians = interleaved_medians(runs, device=suite.plan.device, warmup=warmup, repeats=repeats)
    return {name: units / seconds for name, seconds in medians.items()}


def _report(suite, graphs, kind, dtype, workload: str, per_s: dict, unit: str, *, target: str | None = None) -> dict:
    result = {f"{name}_{unit}_per_s": round(value, 2) for name, value in per_s.items()}
    text = ", ".join(f"{name} {value:.1f}" for name, value in per_s.items())
    if "diffusers" in per_s:
        for name in ("sdclip", "sdclip_graphs"):
            ratio = per_s[name] / per_s["diffusers"]
            result[f"{name}_vs_diffusers"] = round(ratio, 3)
            suite.ratio(f"text_{kind}_{dtype}_{workload}_{name}_vs_diffusers", ratio,
                        target=target if name == "sdclip_graphs" else None)
        text += f" {unit}/s; graphs/diffusers {result['sdclip_graphs_vs_diffusers']:.2f}"
    result["cuda_graph_status"] = graphs.cuda_graph_status
    result["summary"] = text
    return result


def _batch(suite, holder: dict, kind: str, dtype: str, batch: int) -> dict:
    _conditioners(holder, dtype)
    plan, pipe = suite.plan, holder["pipe"]
    rng = random.Random(batch)
    prompts = [make_prompt(rng) for _ in range(batch)]  # distinct prompts, as encode.py's (a)
    calls = plan.calls.get(batch, 1)
    runs = {"sdclip": lambda: [holder["eager"].encode(prompts) for _ in range(calls)],
            "sdclip_graphs": lambda: [holder["graphs"].encode(prompts) for _ in range(calls)]}
    if not holder["diffusers_error"]:
        runs["diffusers"] = lambda: [diffusers_encode(pipe, kind, plan.device, prompts) for _ in range(calls)]
    per_s = _timed(suite, runs, batch * calls, repeats=plan.repeats)
    target = "text_batch1_graphs_vs_diffusers" if batch == 1 else None
    return _report(suite, holder["graphs"], kind, dtype, f"batch{batch}", per_s, "prompts", target=target)


def _realistic(suite, holder: dict, kind: str, dtype: str) -> dict:
    _conditioners(holder, dtype)
    plan, pipe = suite.plan, holder["pipe"]
    requests = realistic_requests(random.Random(0), plan.requests)
    cached = {"sdclip": holder["eager_cached"], "sdclip_graphs": holder["graphs_cached"]}

    def ours(cond):
        def run():
            cond.clear_cache()  # a fresh cache each run: the first request pays like everyone else
            for prompt in requests:
                cond.encode(prompt, NEGATIVE, num_images_per_prompt=4)
        return run

    runs = {name: ours(cond) for name, cond in cached.items()}
    if not holder["diffusers_error"]:
        runs["diffusers"] = lambda: [diffusers_encode(pipe, kind, plan.device, p, NEGATIVE, 4) for p in requests]
    per_s = _timed(suite, runs, len(requests), repeats=min(3, plan.repeats))
    return _report(suite, holder["graphs_cached"], kind, dtype, "realistic", per_s, "requests")
