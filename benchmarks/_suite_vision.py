"""GPU suite, sections 2 and 4: the vision tower alone, and sdclip against its peers on PIL images.

(2) builds clip-vit-large-patch14 (both towers, random weights) per dtype, checks sdclip's image
features against transformers' ``get_image_features`` on ``CLIPImageProcessorPil`` pixels, then
times the vision tower on ready-made pixels at batch 64 and 256 (every SDPA backend at the larger):
images/s, TFLOP/s (``score.vision_gflop``: 162 GFLOP per 224-px image, from the config) and the share
of the card's dense bf16 peak. (4) ranks best-of-4 groups of 512x512 PIL images with sdclip and with
``score.py``'s two peers (the CLIP usage note's loop, torchmetrics per pair), timed in turns.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time

import numpy as np
import torch

import score
from _harness import interleaved_medians, synchronize
from _suite_text import DTYPES, TOLERANCE

# dense (no sparsity) bf16 tensor-core peak, TFLOP/s; the first name found in the card's name wins
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0),
                    ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("4090", 165.0))  # fmt: skip
BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}


def peak_tflops(card: str, override: float | None) -> float | None:
    return override or next((value for name, value in PEAK_BF16_TFLOPS if name in card), None)


def attention_backend(name: str):
    """A context that forces one SDPA backend ("default": let PyTorch choose)."""
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, BACKENDS[name]))


def throughput(fn, units: int, *, device: str, min_s: float) -> float:
    """``units`` per second of ``fn``: two warm-up calls, one timed to size the run, then ~``min_s`` s."""
    with torch.inference_mode():
        fn()
        fn()
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        once = time.perf_counter() - start
        count = max(1, math.ceil(min_s / max(once, 1e-6))) if min_s else 1
        start = time.perf_counter()
        for _ in range(count):
            fn()
        synchronize(device)
    return units * count / (time.perf_counter() - start)


def build_clip(plan) -> torch.nn.Module:
    """clip-vit-large-patch14 (tiny towers in the dry run), random weights, fp32, on the device."""
    from sdclip.testing import L14_TEXT, L14_VISION, TINY_TEXT, TINY_VISION, random_clip_model

    towers = (TINY_TEXT, TINY_VISION) if plan.dry_run else (L14_TEXT, L14_VISION)
    try:
        with torch.device(plan.device):  # random init on the GPU: seconds instead of a minute on the CPU
            model = random_clip_model(*towers)
    except Exception:
        model = random_clip_model(*towers)
    model.config.vision_config._attn_implementation = model.config.text_config._attn_implementation = "sdpa"
    return model.to(plan.device).requires_grad_(False)


def run_model_only(suite) -> None:
    plan = suite.plan
    suite.case("vision", "build", lambda: _build(suite))
    for dtype in plan.dtypes:
        suite.case("vision", f"{dtype}-check", lambda: _check(suite, dtype))
        for batch in plan.vision_batches:
            for backend in plan.backends if batch == max(plan.vision_batches) else ("default",):
                suite.case("vision", f"{dtype}-batch{batch}-{backend}", lambda: _tower(suite, dtype, batch, backend))


def _build(suite) -> dict:
    master = build_clip(suite.plan)
    suite.state["clip"] = {dtype: copy.deepcopy(master).to(DTYPES[dtype]) for dtype in suite.plan.dtypes}
    suite.state["gflop"] = score.vision_gflop(master.config)
    suite.state["vision_ips"] = {}
    suite.state["peak"] = peak_tflops(suite.data["card"], suite.state.get("peak_tflops"))
    del master
    return {"gflop_per_image": round(suite.state["gflop"], 2), "peak_tflops": suite.state["peak"],
            "summary": f"{suite.state['gflop']:.1f} GFLOP per image (from the config); peak "
                       f"{suite.state['peak'] or 'unknown'} TFLOP/s"}  # fmt: skip


def _check(suite, dtype: str) -> dict:
    """sdclip's image features and scores vs transformers' on CLIPImageProcessorPil pixels, same dtype."""
    from transformers import CLIPImageProcessorPil

    from sdclip import ClipScorer, load_tokenizer

    model, plan = suite.state["clip"][dtype], suite.plan
    size = model.config.vision_config.image_size
    images = score.make_images(8, seed=3, size=plan.image_size)
    processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    pixels = processor(images=images, return_tensors="pt").pixel_values.to(plan.device, DTYPES[dtype])
    with torch.inference_mode():
        theirs = score.Transformers4Features(model).get_image_features(pixel_values=pixels).float()
    ours = ClipScorer(model, load_tokenizer(), batch_size=4).image_features(images).float()
    worst, scale = (ours - theirs).abs().max().item(), theirs.abs().max().item()
    relative = worst / max(1.0, scale)
    ok = relative <= TOLERANCE[dtype]
    return {"max_abs_diff": worst, "relative": relative, "ok": ok, **({} if ok else {"status": "check_failed"}),
            "summary": f"image features vs transformers: relative difference {relative:.2e} "
                       f"(tolerance {TOLERANCE[dtype]:.0e}) {'ok' if ok else 'FAILED'}"}  # fmt: skip


def _tower(suite, dtype: str, batch: int, backend: str) -> dict:
    model, plan = suite.state["clip"][dtype], suite.plan
    size = model.config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, device=plan.device, dtype=DTYPES[dtype])

    def forward():
        with attention_backend(backend):
            return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

    per_s = throughput(forward, batch, device=plan.device, min_s=plan.min_s)
    tflops = per_s * suite.state["gflop"] / 1000
    peak = suite.state["peak"]
    share = tflops / peak if peak else None
    if backend == "default":
        suite.state["vision_ips"][(dtype, batch)] = per_s
        suite.ratio(f"vision_{dtype}_batch{batch}_share_of_peak", share,
                    target="vision_share_of_peak" if dtype == "bf16" else None)
    share_text = f", {100 * share:.1f}% of {peak:.0f}" if share is not None else ""
    return {"images_per_s": round(per_s, 1), "tflops": round(tflops, 1), "share_of_peak": share,
            "summary": f"{per_s:.0f} images/s, {tflops:.1f} TFLOP/s{share_text}"}


# -- section 4: the peers ---------------------------------------------------------------------------


def run_peers(suite) -> None:
    suite.case("peers", "best-of-4", lambda: _peers(suite))


def _peers(suite) -> dict:
    from transformers import CLIPImageProcessor, CLIPProcessor

    from sdclip import ClipScorer, load_tokenizer

    plan = suite.plan
    dtype = "fp16" if "fp16" in plan.dtypes else plan.dtypes[0]  # what score.py and the CLI use on CUDA
    model, device = suite.state["clip"][dtype], torch.device(plan.device)
    prompts = [f"{p}, variant {i // len(score.PROMPTS)}" for i, p in
               zip(range(plan.peer_prompts), score.PROMPTS * 8)]  # fmt: skip
    images = score.make_images(4 * len(prompts), seed=5, size=plan.image_size)
    groups = [(prompt, images[4 * i : 4 * i + 4]) for i, prompt in enumerate(prompts)]
    tensor_groups = [(prompt, [torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).to(device) for im in group])
                     for prompt, group in groups]  # fmt: skip
    tokenizer = load_tokenizer()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)  # what users get
    fast_dtype = "bf16" if "bf16" in plan.dtypes else dtype
    scorers = {"sdclip": ClipScorer(model, tokenizer, workers=plan.workers),
               "sdclip_fast_bf16": ClipScorer(suite.state["clip"][fast_dtype], tokenizer, workers=plan.workers,
                                              preprocessing="fast", batch_size=max(plan.vision_batches))}
    results: dict = {}

    def ours(name):
        def run():
            scorers[name].clear_cache()
            rankings = scorers[name].rank_groups(groups)  # per pair, in input order:
            results[name] = [dict(zip(r.indices, r.scores))[i] for r in rankings for i in range(len(r))]
        return run

    loop = score.usage_note_loop(model, processor, device, DTYPES[dtype])
    per_pair = score.torchmetrics_per_pair(model, processor, device, DTYPES[dtype])
    runs = {name: ours(name) for name in scorers}
    runs["usage_note_loop"] = lambda: results.__setitem__("loop", loop(groups))
    runs["torchmetrics_per_pair"] = lambda: results.__setitem__("torchmetrics", per_pair(tensor_groups))
    medians = interleaved_medians(runs, device=plan.device, warmup=1, repeats=min(2, plan.repeats))
    per_s = {name: len(images) / seconds for name, seconds in medians.items()}
    ours_sorted = [s for i in range(0, len(images), 4) for s in sorted(results["sdclip"][i : i + 4], reverse=True)]
    loop_scores = [s for group in results["loop"] for s in group]  # each group best first
    out = {f"{name}_images_per_s": round(value, 2) for name, value in per_s.items()}
    out["dtype"], out["images"] = dtype, len(images)
    # score units (100 * cos); the peers' CLIPImageProcessor may use torchvision's resize, not Pillow's
    out["max_diff_vs_loop"] = max(abs(a - b) for a, b in zip(ours_sorted, loop_scores))
    out["max_diff_vs_torchmetrics"] = max(abs(max(a, 0.0) - b) for a, b in zip(results["sdclip"], results["torchmetrics"]))
    for name in scorers:
        for peer, target in (("usage_note_loop", "vs_loop"), ("torchmetrics_per_pair", "vs_torchmetrics")):
            ratio = per_s[name] / per_s[peer]
            out[f"{name}_vs_{peer}"] = round(ratio, 2)
            suite.ratio(f"score_{name}_vs_{peer}", ratio, target=target if name == "sdclip" else None)
    out["summary"] = (f"images/s: sdclip {per_s['sdclip']:.1f}, fast bf16 {per_s['sdclip_fast_bf16']:.1f}, "
                      f"loop {per_s['usage_note_loop']:.1f}, torchmetrics {per_s['torchmetrics_per_pair']:.1f}; "
                      f"max |score diff| vs loop {out['max_diff_vs_loop']:.3f}, vs torchmetrics "
                      f"{out['max_diff_vs_torchmetrics']:.3f}")
    return out
