"""Regenerate sdclip's shipped CLIP tokenizer files from OpenAI's BPE table.

sdclip ships ``vocab.json`` and ``merges.txt`` so that tokenization works offline. They are derived
from ``bpe_simple_vocab_16e6.txt.gz``, the merge table OpenAI released with CLIP (also the data file
inside the ``open-clip-torch`` and ``clip-anytorch`` wheels), with the same construction as OpenAI's
``SimpleTokenizer`` and Hugging Face's ``openai/clip-vit-large-patch14`` files:

1. ``pip download --no-deps open-clip-torch -d /tmp/oc`` (do not install it: it pulls torchvision).
2. ``unzip -j /tmp/oc/open_clip_torch-*.whl open_clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/oc``
3. ``python scripts/make_tokenizer_data.py /tmp/oc/bpe_simple_vocab_16e6.txt.gz``

The vocabulary is the 256 byte symbols, the same with the end-of-word marker ``</w>``, one entry per
merge (48,894 of them) and the two special tokens: 49,408 entries.
"""

import argparse
import gzip
import json
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent.parent / "sdclip" / "models" / "_tokenizer_data"
N_MERGES = 49152 - 256 - 2  # OpenAI's SimpleTokenizer keeps this many merges


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def build(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(vocab)}, merges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe_gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    args = parser.parse_args()
    vocab, merges = build(args.bpe_gz)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (OUT_DIR / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT_DIR}")


if __name__ == "__main__":
    main()
