"""Benchmark: training throughput of ``sdclip train``'s step against a plain transformers loop.

Same model (random weights, seeded), same batch, same optimizer settings, timed in turns after warm-up:

* sdclip: one optimizer step of ``sdclip.training`` as ``train`` runs it (``_Run._micro_step``: the
  dual-encoder forward under accelerate, ``ClipLoss`` on features gathered across processes, backward,
  AdamW without decay on gains/biases/temperature, LR schedule, temperature clamp);
* peer: the loop people write from the transformers docs: ``CLIPModel(input_ids, pixel_values,
  return_loss=True).loss.backward()`` + ``torch.optim.AdamW`` + ``zero_grad``.

Then the scaling on the CPU: 1 process x 2 threads vs 2 processes x 1 thread (``torchrun``, gloo; each
process takes half of the global batch, as ``train`` does).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/train.py                 # CPU fp32, "small" model, batch 64
    python benchmarks/train.py --device cuda --size b16 --bf16   # GPU: ViT-B/16-sized, bf16 autocast
    python benchmarks/train.py --device cuda --size l14 --bf16   # GPU: ViT-L/14-sized

The last lines are ``RATIO train_step <sdclip samples/s / peer samples/s>`` (target >= 1.0) and the
scaling figures.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import interleaved_medians, machine_name, synchronize  # noqa: E402

SIZES = {
    # small enough for a 2-core CPU: 64 px images, 4-layer towers, the real vocabulary and context
    "small": ({"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4},
              {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
               "patch_size": 8, "image_size": 64}, 256),
    "b16": ({"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
            {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
             "patch_size": 16, "image_size": 224}, 512),
    "l14": ({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
            {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
             "patch_size": 14, "image_size": 224}, 768),
}  # fmt: skip
WORDS = "a photo of the red blue green small large circle square star on left right dark light".split()


def config(size: str) -> dict:
    text, vision, dim = SIZES[size]
    return {"text_config": {**text, "vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 49406,
                            "eos_token_id": 49407, "pad_token_id": 1, "projection_dim": dim},
            "vision_config": {**vision, "projection_dim": dim}, "projection_dim": dim}  # fmt: skip


def pairs(count: int, image_size: int) -> list[tuple[Image.Image, str]]:
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(count, image_size, image_size, 3, generator=generator) * 255).to(torch.uint8).numpy()
    picks = torch.randint(len(WORDS), (count, 8), generator=generator).tolist()
    return [(Image.fromarray(pixels[i]), " ".join(WORDS[j] for j in picks[i])) for i in range(count)]


def sdclip_step(size: str, batch_size: int, *, mixed_precision: str = "no"):
    """(run one step, the Batch, the model's initial weights) with sdclip's own training objects."""
    from sdclip.training.batches import Collator, epoch_batches
    from sdclip.training.data import load_pairs
    from sdclip.training.model_setup import starting_model
    from sdclip.training.options import TrainConfig
    from sdclip.training.trainer import TrainResult, _accelerator, _Run

    cfg = TrainConfig(batch_size=batch_size, max_steps=10**6, progress=False, plot=False,
                      mixed_precision=mixed_precision)  # fmt: skip
    accelerator = _accelerator(cfg)
    start = starting_model(config(size), seed=0)
    initial = copy.deepcopy(start.model.state_dict())
    source = load_pairs(pairs(batch_size * accelerator.num_processes, start.preprocess.output_size[0]))
    collate = Collator(source, start.tokenizer, start.preprocess, max_length=77)
    run = _Run(cfg, accelerator, start, collate, None, TrainResult(out=Path(".")))
    indices = epoch_batches(len(source), batch_size, epoch=0, seed=0, world_size=accelerator.num_processes,
                            rank=accelerator.process_index)[0]  # fmt: skip
    batch = collate(indices)
    return (lambda: run._micro_step(batch)), batch, initial, accelerator


def plain_step(size: str, batch, initial: dict, device: str, bf16: bool):
    """The transformers-docs loop on the same model weights and the same batch."""
    from transformers import CLIPConfig, CLIPModel

    model = CLIPModel(CLIPConfig(**config(size))).to(device)
    model.load_state_dict(initial)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6)
    pixels, ids = batch.pixel_values.to(device), batch.input_ids.to(device)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def worker(size: str, batch_size: int, repeats: int) -> None:
    """Under torchrun: time sdclip's step with this process's share of the global batch."""
    step, _, _, accelerator = sdclip_step(size, batch_size)
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        accelerator.wait_for_everyone()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if accelerator.is_main_process:
        print(f"SCALING 2x1 {batch_size * accelerator.num_processes / statistics.median(times):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both (GPU)")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(1)
        return worker(args.size, args.batch // int(os.environ["WORLD_SIZE"]), args.repeats)

    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    ours, batch, initial, _ = sdclip_step(args.size, args.batch, mixed_precision="bf16" if args.bf16 else "no")
    theirs = plain_step(args.size, batch, initial, args.device, args.bf16)
    medians = interleaved_medians({"sdclip": ours, "transformers": theirs}, device=args.device, warmup=2,
                                  repeats=args.repeats)  # fmt: skip
    sps = {name: args.batch / seconds for name, seconds in medians.items()}
    print(f"machine: {machine_name(args.device)}; model {args.size}, batch {args.batch}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {args.repeats} repeats, median")
    for name, value in sps.items():
        print(f"{name:>12}: {value:8.2f} samples/s ({medians[name] * 1000:.0f} ms/step)")

    if args.device == "cpu" and not args.no_scaling:
        torch.set_num_threads(2)
        two_threads = interleaved_medians({"sdclip": ours}, device="cpu", warmup=1, repeats=args.repeats)["sdclip"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               __file__, "--worker", "--size", args.size, "--batch", str(args.batch),
                               "--repeats", str(args.repeats)], env=env, capture_output=True, text=True)  # fmt: skip
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("SCALING")), None)
        print(f"scaling: 1 process x 2 threads: {args.batch / two_threads:.2f} samples/s; 2 processes x 1 thread: "
              f"{line.split()[-1] if line else 'failed: ' + done.stderr[-300:]} samples/s")
    synchronize(args.device)
    print(f"RATIO train_step {sps['sdclip'] / sps['transformers']:.2f}")


if __name__ == "__main__":
    main()
