"""Peak resident memory of loading a T5 encoder straight into bf16 / fp16 (sdclip) vs transformers' from_pretrained.

A random ``T5EncoderModel`` in T5-large's shapes (d_model 1024, 24 layers, 16 heads, d_ff 2816, gated-GELU,
vocabulary 32128: ~335M parameters; T5-XXL has the same layout at 4.7B) is saved once as an fp16
``.safetensors`` file (as ComfyUI's ``t5xxl_fp16.safetensors``) and as a transformers folder, then each
loader runs in a fresh process that reports its peak RSS (``VmHWM``, reset by exec unlike ``ru_maxrss``) above the RSS it had before
loading (torch and transformers imported). The target is at most ~1.1x the weights in the requested dtype.

Run:  python benchmarks/t5_memory.py [--dtype bf16] [--workdir /tmp/t5mem]
Prints ``MEMORY <loader> <peak MiB> <ratio to the weights>`` lines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, torch, transformers
from pathlib import Path
def rss():
    with open("/proc/self/statm") as f:
        import os
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
loader, path, dtype = sys.argv[1], Path(sys.argv[2]), getattr(torch, sys.argv[3])
from sdclip.models.t5 import load_t5
import accelerate, safetensors.torch  # imported before the start: their code is not the weights
from transformers import T5Config, T5EncoderModel
before = rss()
if loader == "sdclip":
    model = load_t5(path, device=torch.device("cpu"), dtype=dtype)
else:
    model = transformers.T5EncoderModel.from_pretrained(str(path), dtype=dtype)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"before": before, "peak": peak, "weights": weights, "dtype": str(next(model.parameters()).dtype)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--workdir", default="/tmp/sdclip-t5-memory")
    args = parser.parse_args()
    work = Path(args.workdir)
    file, folder = work / "t5_large_fp16.safetensors", work / "t5-large-folder"
    if not file.is_file() or not (folder / "config.json").is_file():
        import torch
        from safetensors.torch import save_file

        from sdclip.testing_mmdit import T5_LARGE, tiny_t5_encoder

        work.mkdir(parents=True, exist_ok=True)
        model = tiny_t5_encoder(T5_LARGE).to(torch.float16)
        tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
        save_file(tensors, str(file))
        model.save_pretrained(folder)
        del model, tensors
    results = {}
    for loader, path in (("sdclip", file), ("sdclip_folder", folder), ("transformers", folder)):
        out = subprocess.run([sys.executable, "-c", CHILD, "sdclip" if loader != "transformers" else loader, str(path),
                              args.dtype], capture_output=True, text=True, check=True)  # fmt: skip
        results[loader] = json.loads(out.stdout.strip().splitlines()[-1])
    for loader, r in results.items():
        growth = (r["peak"] - r["before"]) / 2**20
        print(f"{loader}: weights {r['weights'] / 2**20:.0f} MiB in {r['dtype']}; peak RSS above the start "
              f"{growth:.0f} MiB")
        print(f"MEMORY {loader} {growth:.0f} {growth / (r['weights'] / 2**20):.2f}")


if __name__ == "__main__":
    main()
