"""Run under ``torchrun --nproc_per_node 2`` by test_distributed.py (gloo on the CPU); also imported by it.

``gradients`` computes one contrastive step's gradients with sdclip's own pieces (process slice of the
global batch, the dual-encoder forward under accelerate's data-parallel wrapper, ``ClipLoss`` gathering
with gradient). Run as a script it writes those gradients and then a full two-step ``train`` run to ``argv[1]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image

SMALL = {
    "text_config": {"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 1, "max_position_embeddings": 77, "projection_dim": 32,
                    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 1,
                      "patch_size": 8, "image_size": 32, "projection_dim": 32},
    "projection_dim": 32,
}  # fmt: skip
GLOBAL_BATCH = 16


def pairs() -> list[tuple[Image.Image, str]]:
    generator = torch.Generator().manual_seed(3)
    noise = (torch.rand(GLOBAL_BATCH * 2, 32, 32, 3, generator=generator) * 255).to(torch.uint8).numpy()
    words = ["cat", "dog", "red", "blue", "tree", "car", "sky", "sea"]
    return [(Image.fromarray(noise[i]), f"a {words[i % 8]} and a {words[(i * 3) % 8]} {i}") for i in range(len(noise))]


def gradients(per_process_batch: int, *, drop: int | None = None) -> dict[str, torch.Tensor]:
    """Gradients of the first global batch of epoch 0, after data-parallel averaging; ``drop``: leave out the
    pair at that position of the global batch (as a bad image would), so processes hold unequal rows."""
    from sdclip.training.batches import Collator, epoch_batches
    from sdclip.training.data import load_pairs
    from sdclip.training.loss import ClipLoss
    from sdclip.training.model_setup import starting_model
    from sdclip.training.options import TrainConfig
    from sdclip.training.trainer import _accelerator, _dual_encoder

    accelerator = _accelerator(TrainConfig())
    start = starting_model(SMALL, seed=0)
    source = load_pairs(pairs())
    indices = epoch_batches(len(source), per_process_batch, epoch=0, seed=0, world_size=accelerator.num_processes,
                            rank=accelerator.process_index)[0]  # fmt: skip
    if drop is not None:
        first = accelerator.process_index * len(indices)
        indices = [index for position, index in enumerate(indices, first) if position != drop]
    batch = Collator(source, start.tokenizer, start.preprocess, max_length=77)(indices)
    net = accelerator.prepare(_dual_encoder(start.model, "none"))
    image, text, scale = net(batch.pixel_values, batch.input_ids)
    accelerator.backward(ClipLoss()(image, text, scale))
    return {name: p.grad.detach().clone() for name, p in start.model.named_parameters()}


def main(out: Path) -> None:
    from accelerate import PartialState

    from sdclip.training import train

    torch.set_num_threads(1)
    grads = gradients(GLOBAL_BATCH // PartialState(cpu=True).num_processes)
    uneven = gradients(GLOBAL_BATCH // PartialState().num_processes, drop=GLOBAL_BATCH - 1)  # 8 + 7 rows
    if PartialState().is_main_process:
        torch.save({"even": grads, "uneven": uneven}, out / "grads.pt")
    train(pairs(), model=SMALL, out=out / "model", batch_size=GLOBAL_BATCH // PartialState().num_processes,
          progress=False, lr=1e-3, val_fraction=0.25, eval_every=1, save_every=1)  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
