"""Benchmark: best-of-4 ranking with sdclip against the two ways people do it today.

Workload: N prompts x 4 generated 512x512 PIL images each (seeded smooth noise), ranked per prompt,
on the real clip-vit-large-patch14 architecture with random weights (no download needed). In the
same run, interleaved repeat by repeat (so machine load hits everyone alike):

* sdclip: ``ClipScorer.rank_groups`` (each prompt encoded once, images in batches);
* (a) the CLIP usage note's loop: ``CLIPProcessor(text=[prompt], images=group)`` + ``CLIPModel(**inputs)``
  per prompt group, ``logits_per_image`` ranked;
* (b) torchmetrics as users call it: ``clip_score(image, prompt)`` per pair through ``CLIPProcessor``
  (the text is encoded again for every image). torchmetrics 1.9 divides ``get_*_features(...)`` by its
  norm, which crashes on transformers 5 (a model output, not a tensor): a thin proxy returns
  ``.pooler_output`` as transformers 4 did. The weights are shared, nothing is copied.

Peers run under ``torch.no_grad()`` (kinder to them than their defaults). On CUDA everything runs in
fp16 (the peers' fp32 pixels are cast, or autocast for torchmetrics), and the vision tower alone is
timed on ready-made pixels to report its share of the GPU's dense fp16/bf16 peak.

Usage:
    python benchmarks/score.py            # 16 prompts (64 images), 3 repeats
    python benchmarks/score.py --quick    # 4 prompts (16 images), 2 repeats: ~10 min on a 2-core CPU
    python benchmarks/score.py --case multi --quick   # clip + aesthetic vs clip alone (RATIO multi_vs_single)
    python benchmarks/score.py --case report          # the HTML report of 10,000 rows (benchmarks/score_cases.py)

The last lines are ``RATIO <workload> <sdclip images/s / peer images/s>``, one per comparison.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdclip import ClipScorer, load_tokenizer
from sdclip.testing import L14_TEXT, L14_VISION, TINY_TEXT, TINY_VISION, random_clip_model

# dense fp16/bf16 tensor-core peak, TFLOP/s (no sparsity), by GPU name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "4090": 165.0}
PROMPTS = [
    "a photo of a cat sitting on a windowsill, golden hour, 35mm",
    "an astronaut riding a horse on the moon, digital art",
    "a bowl of ramen with a soft boiled egg, studio lighting",
    "a watercolor painting of a lighthouse in a storm",
    "portrait of an old fisherman, dramatic lighting, highly detailed",
    "a cozy cabin in a snowy forest at night, warm light in the windows",
    "a futuristic city skyline at sunset, cyberpunk, neon",
    "a red fox in a field of flowers, shallow depth of field",
    "an isometric illustration of a tiny island with a castle",
    "a macro photo of a dew drop on a leaf",
    "a vintage car parked on a cobblestone street in paris",
    "a dragon made of clouds flying over mountains",
    "a minimalist poster of a bicycle, flat colors",
    "a corgi wearing sunglasses on a beach",
    "a still life of fruit in the style of cezanne",
    "an underwater coral reef with colorful fish, 4k",
]


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_images(count: int, *, seed: int = 0, size: int = 512) -> list[Image.Image]:
    """Seeded smooth-noise RGB images (upscaled 16x16 noise plus a gradient), like soft generated scenes."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        base = Image.fromarray(rs.randint(0, 256, (16, 16, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        mixed = 0.8 * np.asarray(base, dtype=np.float32) + 0.2 * 255 * np.stack([x, y, 1 - x], -1)
        images.append(Image.fromarray(mixed.clip(0, 255).astype(np.uint8)))
    return images


def vision_gflop(config) -> float:
    """Vision tower GFLOP per image (2 per multiply-add): projections, MLP, attention and patch embedding."""
    v = config.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    d, inner = v.hidden_size, v.intermediate_size
    per_layer = 4 * d * d * tokens + 2 * d * inner * tokens + 2 * tokens * tokens * d
    patches = 3 * v.patch_size**2 * d * (tokens - 1)
    return 2 * (v.num_hidden_layers * per_layer + patches + d * config.projection_dim) / 1e9


class Transformers4Features:
    """torchmetrics 1.9 wants ``get_*_features`` to return tensors, as transformers 4 did."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.config = model, model.config

    def to(self, *args, **kwargs):
        self.model.to(*args, **kwargs)
        return self

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def usage_note_loop(model, processor, device: torch.device, dtype: torch.dtype) -> Callable[[list], list]:
    """Peer (a): the CLIP usage note's loop, ``CLIPProcessor`` + ``CLIPModel`` per (prompt, images) group;
    returns each group's scores (100 * cos), best first."""
    scale = model.logit_scale.exp().item()

    def run(work: list) -> list:
        results = []
        for prompt, group in work:
            inputs = processor(text=[prompt], images=group, return_tensors="pt", padding=True)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.no_grad():
                logits = model(**inputs).logits_per_image[:, 0].float()
            results.append(sorted((100 * logits / scale).tolist(), reverse=True))
        return results

    return run


def torchmetrics_per_pair(model, processor, device: torch.device, dtype: torch.dtype) -> Callable[[list], list]:
    """Peer (b): torchmetrics' ``clip_score(image, prompt)`` once per pair, as users call it, on
    (prompt, [(C, H, W) uint8 tensors]) groups; autocast to ``dtype`` on CUDA. Returns per-pair scores."""
    from torchmetrics.functional.multimodal.clip_score import clip_score

    tm_model = Transformers4Features(model)

    def run(work: list) -> list:
        flat = [(tensor, prompt) for prompt, group in work for tensor in group]
        scores = []
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            for tensor, prompt in flat:
                scores.append(clip_score(tensor, prompt, model_name_or_path=lambda: (tm_model, processor)).item())
        return scores

    return run


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 prompts, 2 repeats")
    parser.add_argument("--prompts", type=int, default=None, help="prompts (4 images each); default 16, quick 4")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median); default 3, quick 2")
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--batch-size", type=int, default=None, help="sdclip batch (default 64 cuda, 4 cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="GPU dense fp16/bf16 peak (default: from the GPU name, e.g. H100/H200 989)")
    parser.add_argument("--no-bf16", action="store_true", help="CPU: skip the extra sdclip-in-bf16 measurement")
    parser.add_argument("--tiny", action="store_true", help="smoke-test the script on tiny towers (numbers meaningless)")
    parser.add_argument("--case", choices=["ranking", "multi", "report"], default="ranking",
                        help="ranking: sdclip vs its peers (default); multi: clip+aesthetic vs clip; report: 10,000 rows")
    parser.add_argument("--work", default="/tmp/sdclip-bench-report", help="--case report: where the files go")
    args = parser.parse_args()
    if args.case == "report":
        from score_cases import report_case

        report_case(Path(args.work))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    prompts = PROMPTS[: args.prompts or (4 if args.quick else 16)]
    repeats = args.repeats or (2 if args.quick else 3)
    per_prompt = 4

    from transformers import CLIPImageProcessor, CLIPProcessor

    towers = (TINY_TEXT, TINY_VISION) if args.tiny else (L14_TEXT, L14_VISION)
    model = random_clip_model(*towers).to(device=device, dtype=dtype).requires_grad_(False)
    tokenizer = load_tokenizer()
    image_processor = CLIPImageProcessor()  # what users get: torchvision backend if installed, else PIL
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    images = make_images(len(prompts) * per_prompt)
    groups = [(prompt, images[i * per_prompt : (i + 1) * per_prompt]) for i, prompt in enumerate(prompts)]
    pairs = [(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).to(device), prompt)
             for prompt, group in groups for im in group]  # torchmetrics takes (C, H, W) uint8 tensors

    scorer = ClipScorer(model, tokenizer, batch_size=args.batch_size)
    if args.case == "multi":
        from score_cases import multi_vs_single

        print(f"machine: {machine_name(device)} | {os.cpu_count()} cpus, torch threads {torch.get_num_threads()} | "
              f"device {device} | dtype {str(dtype).removeprefix('torch.')} | batch {scorer.batch_size} | "
              f"{len(images)} images, 512x512 PIL, {repeats} repeats, median")
        multi_vs_single(scorer, images, [p for p, group in groups for _ in group], repeats=repeats)
        return

    def sdclip_run(scorer: ClipScorer) -> Callable[[list], list]:
        def run(work: list) -> list:
            scorer.clear_cache()  # each timed run encodes its prompts, as a fresh call would
            return [r.scores for r in scorer.rank_groups(work)]
        return run

    tm_groups = [(prompt, [t for t, p in pairs if p == prompt]) for prompt in prompts]
    methods: dict[str, tuple[Callable, list]] = {
        "sdclip": (sdclip_run(scorer), groups),
        "usage_note_loop": (usage_note_loop(model, processor, device, dtype), groups),
        "torchmetrics_per_pair": (torchmetrics_per_pair(model, processor, device, dtype), tm_groups),
    }
    if device.type == "cuda":
        methods["sdclip_fast"] = (sdclip_run(ClipScorer(model, tokenizer, batch_size=args.batch_size,
                                                        preprocessing="fast")), groups)
    bf16_model = None
    if device.type == "cpu" and not args.no_bf16:
        bf16_model = copy.deepcopy(model).to(torch.bfloat16)
        methods["sdclip_bf16"] = (sdclip_run(ClipScorer(bf16_model, tokenizer, batch_size=args.batch_size)), groups)

    threads = torch.get_num_threads()
    print(f"machine: {machine_name(device)} | {os.cpu_count()} cpus, torch threads {threads} | torch {torch.__version__}")
    print(f"device {device} | dtype {str(dtype).removeprefix('torch.')} | image processor "
          f"{type(image_processor).__name__} | sdclip batch {scorer.batch_size}")
    print(f"workload: best-of-{per_prompt} ranking of {len(prompts)} prompts ({len(images)} images, 512x512 PIL), "
          f"warm-up 1 group, {repeats} repeats, median")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    for name, (run, work) in methods.items():  # warm-up: one group each
        run(work[:1])
    times: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, list] = {}
    for repeat in range(repeats):
        for name, (run, work) in methods.items():
            synchronize(device)
            start = time.perf_counter()
            results[name] = run(work)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            print(f"  repeat {repeat + 1}/{repeats} {name}: {times[name][-1]:.2f} s", flush=True)

    speed = {name: len(images) / statistics.median(ts) for name, ts in times.items()}
    print(f"\n{'method':<24}{'median s':>10}{'images/s':>11}{'best s':>9}  (best: the least disturbed repeat)")
    for name, ts in times.items():
        print(f"{name:<24}{statistics.median(ts):>10.2f}{speed[name]:>11.3f}{min(ts):>9.2f}")
    sdclip_scores = [s for group in results["sdclip"] for s in group]
    loop_scores = [s for group in results["usage_note_loop"] for s in group]
    print(f"check: sdclip vs usage-note loop, max |score difference| {max(abs(a - b) for a, b in zip(sdclip_scores, loop_scores)):.2e}")
    if "sdclip_bf16" in results:
        bf16_scores = [s for group in results["sdclip_bf16"] for s in group]
        print(f"check: sdclip bf16 vs fp32, max |score difference| "
              f"{max(abs(a - b) for a, b in zip(sdclip_scores, bf16_scores)):.3f} (scores are 100*cos)")

    peak_line = None
    if device.type == "cuda":
        batch = args.batch_size or 64
        size = model.config.vision_config.image_size
        pixels = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        with torch.inference_mode():
            for _ in range(3):
                model.get_image_features(pixel_values=pixels)
            synchronize(device)
            iterations = 20
            start = time.perf_counter()
            for _ in range(iterations):
                model.get_image_features(pixel_values=pixels)
            synchronize(device)
        per_second = batch * iterations / (time.perf_counter() - start)
        tflops = per_second * vision_gflop(model.config) / 1000
        name = machine_name(device)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        share = f", {100 * tflops / peak:.1f}% of the {peak:.0f} TFLOP/s dense peak" if peak else ""
        peak_line = (f"vision tower alone, batch {batch} fp16: {per_second:.0f} images/s, "
                     f"{vision_gflop(model.config):.0f} GFLOP/image -> {tflops:.0f} TFLOP/s{share}")
        print(peak_line)
    if hasattr(os, "getloadavg"):
        print("load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    tag = f"best_of_{per_prompt}_x{len(prompts)}_{device.type}_{str(dtype).removeprefix('torch.')}"
    print()
    for peer in ("usage_note_loop", "torchmetrics_per_pair"):
        print(f"RATIO {tag}_vs_{peer} {speed['sdclip'] / speed[peer]:.2f}")
        if "sdclip_fast" in speed:
            print(f"RATIO {tag}_fast_preprocessing_vs_{peer} {speed['sdclip_fast'] / speed[peer]:.2f}")
        if "sdclip_bf16" in speed:
            print(f"RATIO {tag}_sdclip_in_bf16_vs_{peer} {speed['sdclip_bf16'] / speed[peer]:.2f}")


if __name__ == "__main__":
    main()
