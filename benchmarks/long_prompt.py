"""Benchmark: encoding a 225-token weighted A1111 prompt vs a plain 77-token prompt.

Same clip-vit-large-patch14-shaped text encoder (random weights) for both; sdclip's cache is off so
every call encodes. Target: long time <= chunks x plain time + 10%, i.e. chunking and weighting add
no more than 10% over encoding the chunks themselves.

Run:  python benchmarks/long_prompt.py [--device cuda --dtype fp16] [--quick]
Ends with ``RATIO long_vs_chunks_x_plain <value>`` (<= 1.10 meets the target).
"""

from __future__ import annotations

import argparse
import warnings

import torch

from _harness import interleaved_medians, machine_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from sdclip import TextConditioner
    from sdclip.models.loading import LoadedTextEncoder
    from sdclip.testing import L14_TEXT, random_text_encoder
    from sdclip.models.tokenizer import load_tokenizer

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    encoder = random_text_encoder(L14_TEXT).to(args.device, dtype)
    encoder.config._attn_implementation = "sdpa"
    cond = TextConditioner([LoadedTextEncoder(encoder, load_tokenizer(), None)], cache_size=0)
    words = "masterpiece (best quality:1.2) [blurry] portrait ((detailed eyes)) castle, golden hour".split()

    def count(prompt: str) -> tuple[int, int]:
        tokens = cond.parse(prompt, syntax="a1111", truncate=False)
        return sum(t.text not in ("<|startoftext|>", "<|endoftext|>") for t in tokens), 1 + max(t.chunk for t in tokens)

    n_words = 1
    while count(" ".join(words[i % len(words)] for i in range(n_words)))[0] < 225:
        n_words += 1
    long_prompt = " ".join(words[i % len(words)] for i in range(n_words))
    n_tokens, chunks = count(long_prompt)
    plain_prompt = "a photo of " + "a cat " * 36  # 75 tokens: one full chunk
    repeats = 3 if args.quick else 10

    def encode_long():
        return cond.encode(long_prompt, "", syntax="a1111", truncate=False)

    def encode_plain():
        return cond.encode(plain_prompt, "")

    assert encode_long().prompt_embeds.shape[1] == 77 * chunks
    medians = interleaved_medians({"plain": encode_plain, "long": encode_long}, device=args.device, warmup=2,
                                  repeats=repeats)
    plain, long = medians["plain"], medians["long"]
    print(f"machine: {machine_name(args.device)}; dtype {args.dtype}")
    print(f"plain 77-token prompt: {plain * 1000:.1f} ms (prompt + negative: 2 sequences)")
    print(f"weighted A1111 prompt of {n_tokens} tokens in {chunks} chunks: {long * 1000:.1f} ms "
          f"(negative padded to {chunks} chunks: identical empty chunks run once)")
    print(f"target: <= {chunks} x plain + 10% = {chunks * plain * 1.1 * 1000:.1f} ms")
    print(f"RATIO long_vs_chunks_x_plain {long / (chunks * plain):.2f}")


if __name__ == "__main__":
    main()
