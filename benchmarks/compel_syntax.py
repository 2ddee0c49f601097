"""Benchmark: sdclip's syntax="compel" vs the compel package, same prompts, same text encoder.

A clip-vit-large-patch14-shaped text encoder (random weights: the released model's cost and shapes).
(a) weighted prompts one at a time (cache off): compel's ``Compel(...)(prompt)`` vs
    ``TextConditioner.encode(prompt, syntax="compel")``; every prompt has up- and downweighted runs,
    a quarter are blends and a quarter ``.and()``;
(b) a realistic workload: 128 requests, a shared downweighted negative, 25% repeats (sdclip's cache on;
    compel re-encodes, as it has no cache).

Run:  python benchmarks/compel_syntax.py [--quick] [--tiny]   (--tiny: the test suite's tiny encoder, a smoke run)
Ends with ``RATIO <workload> <value>`` lines (sdclip speed / compel speed).
"""

from __future__ import annotations

import argparse
import random
import warnings

import torch

from _harness import interleaved_medians, machine_name, make_prompt

NEGATIVE = "(lowres, blurry)-- , watermark---"


def weighted(rng: random.Random) -> str:
    words = make_prompt(rng).split(", ")
    words[0] = f"({words[0]})1.3"
    words[-1] = words[-1].split()[-1] + "--"
    text = ", ".join(words)
    kind = rng.random()
    if kind < 0.25:
        return f'("{text}", "{make_prompt(rng)}").blend(0.7, 0.3)'
    if kind < 0.5:
        return f'("{text}", "{make_prompt(rng)}").and()'
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts and repeats (smoke run)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test encoder instead of L/14's shape")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from compel import Compel

    from sdclip import TextConditioner
    from sdclip.models.loading import LoadedTextEncoder
    from sdclip.models.tokenizer import load_tokenizer
    from sdclip.testing import L14_TEXT, TINY_TEXT, random_text_encoder

    encoder = random_text_encoder(TINY_TEXT if args.tiny else L14_TEXT).eval()
    encoder.config._attn_implementation = "sdpa"
    tokenizer = load_tokenizer()
    reference = Compel(tokenizer=tokenizer, text_encoder=encoder)
    rng = random.Random(0)
    prompts = [weighted(rng) for _ in range(8 if args.quick else 32)]
    repeats = 1 if args.quick else 3
    print(f"machine: {machine_name('cpu')}; dtype fp32")

    uncached = TextConditioner([LoadedTextEncoder(encoder, tokenizer, None)], cache_size=0)
    medians = interleaved_medians({
        "sdclip": lambda: [uncached.encode(p, syntax="compel") for p in prompts],
        "compel": lambda: [reference(p) for p in prompts],
    }, device="cpu", repeats=repeats)  # fmt: skip
    print(f"(a) {len(prompts)} weighted prompts one by one: sdclip {len(prompts) / medians['sdclip']:.2f} prompts/s, "
          f"compel {len(prompts) / medians['compel']:.2f} prompts/s")
    ratios = {"one_by_one": medians["compel"] / medians["sdclip"]}

    unique = prompts[: len(prompts) * 3 // 4]
    requests = unique + [rng.choice(unique) for _ in range(len(prompts) - len(unique))]
    rng.shuffle(requests)

    def run_ours():
        cond = TextConditioner([LoadedTextEncoder(encoder, tokenizer, None)], cache_size=256)
        for prompt in requests:
            cond.encode(prompt, NEGATIVE, syntax="compel")

    def run_theirs():
        with torch.no_grad():
            for prompt in requests:
                reference.pad_conditioning_tensors_to_same_length([reference(prompt), reference(NEGATIVE)])

    medians = interleaved_medians({"sdclip": run_ours, "compel": run_theirs}, device="cpu", warmup=0,
                                  repeats=repeats)
    print(f"(b) {len(requests)} requests, shared negative, 25% repeats: sdclip {len(requests) / medians['sdclip']:.2f} "
          f"requests/s, compel {len(requests) / medians['compel']:.2f} requests/s")
    ratios["realistic"] = medians["compel"] / medians["sdclip"]
    for name, value in ratios.items():
        print(f"RATIO {name} {value:.2f}")


if __name__ == "__main__":
    main()
