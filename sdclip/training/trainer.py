"""``train``: contrastive training of a CLIPModel on accelerate, from pairs to a loadable model folder.

One loop for one process, several GPUs or several machines (``accelerate launch``): accelerate wraps the
model for data parallelism and does mixed precision, gradient accumulation and checkpoints; the batches
(``batches.epoch_batches``) and the loss (``loss.ClipLoss``, features gathered with gradient) make the run
independent of the number of processes.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TrainingDataError, TrainingError
from .batches import Batch, Collator, batch_loader, epoch_batches, split_pairs
from .data import DataSpec, load_pairs
from .evaluate import evaluate
from .logs import CsvLog, plot_log
from .loss import ClipLoss, clamp_logit_scale_
from .model_setup import ModelSpec, StartingModel, apply_lock, save_model_folder, starting_model
from .options import TrainConfig

if TYPE_CHECKING:
    import torch

LOG_FILE, CURVES_FILE = "train_log.csv", "train_curves.png"
STATE_FILE, CHECKPOINTS = "trainer_state.json", "checkpoints"


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        out: the model folder (loadable by ``ClipScorer.from_pretrained``, ``TextConditioner.from_pretrained``,
            ``sdclip.clip.load``).
        steps: optimizer steps done in total (a resumed run counts the earlier ones).
        samples: training pairs seen (all processes).
        bad_images: training pairs skipped because their image could not be decoded (all processes; a bad
            image counts once per epoch it is drawn in).
        val_bad_images: validation pairs left out of the evaluation for the same reason.
        skipped: pairs dropped while reading the data, by reason.
        metrics: the last evaluation (empty without a validation set).
        train_pairs, val_pairs: sizes of the split.
    """

    out: Path
    steps: int = 0
    samples: int = 0
    bad_images: int = 0
    val_bad_images: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    train_pairs: int = 0
    val_pairs: int = 0


def train(
    data: DataSpec,
    *,
    model: ModelSpec,
    out: str | Path,
    config: TrainConfig | None = None,
    val_data: DataSpec | None = None,
    overwrite: bool = False,
    **options: Any,
) -> TrainResult:
    """Train ``model`` contrastively on ``data`` and write it to ``out`` as an HF ``CLIPModel`` folder.

    Args:
        data: pairs: a sequence of ``(PIL.Image or path, caption[, label])``, a folder of images with
            same-name ``.txt`` captions, a ``.csv`` / ``.jsonl`` file, a WebDataset ``.tar`` (or a folder of
            them), or a list of these.
        model: a ``transformers.CLIPConfig`` / config dict / ``.json`` config (from scratch, seeded), a
            ``CLIPModel``, or any source ``load_clip_model`` takes.
        out: the output folder: the model (``config.json``, ``model.safetensors``, tokenizer files,
            ``preprocessor_config.json``), ``train_log.csv``, ``train_curves.png``, ``checkpoints/``.
        config: a ``TrainConfig``; ``**options`` override its fields (``epochs=3, batch_size=64, ...``).
        val_data: validation pairs (same kinds as ``data``) instead of a ``val_fraction`` split.
        overwrite: replace a model already in ``out`` (otherwise refused, unless ``resume``).

    Returns:
        A ``TrainResult``. On the CPU the run is bit-for-bit reproducible for a given seed and thread count.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from sdclip.testing import TINY_TEXT, TINY_VISION
        >>> pairs = [(Image.new("RGB", (32, 32), c), f"a {c} square") for c in ("red", "blue", "green", "white")]
        >>> vision = {**TINY_VISION, "patch_size": 16}
        >>> config = {"text_config": TINY_TEXT, "vision_config": vision, "projection_dim": 96}
        >>> result = train(pairs, model=config, out=tempfile.mkdtemp(), batch_size=4, image_size=32,
        ...                progress=False, plot=False)
        >>> result.steps, result.samples
        (1, 4)
    """
    cfg = TrainConfig.from_options(config, **options)
    out = Path(out)
    _check_out(out, resume=cfg.resume, overwrite=overwrite)
    accelerator = _accelerator(cfg)
    start = starting_model(model, image_size=cfg.image_size, seed=cfg.seed)
    pairs = load_pairs(data)
    if val_data is not None:
        train_pairs, val_pairs = pairs, load_pairs(val_data)
    else:
        train_pairs, val_pairs = split_pairs(pairs, cfg.val_fraction, seed=cfg.seed, group_size=cfg.group_size)
    result = TrainResult(out=out, skipped=dict(pairs.skipped), train_pairs=len(train_pairs),
                         val_pairs=len(val_pairs) if val_pairs is not None else 0)  # fmt: skip
    return _Run(cfg, accelerator, start, Collator(train_pairs, start.tokenizer, start.preprocess,
                                                  max_length=_max_length(cfg, start)),
                val_pairs, result).run()  # fmt: skip


def _check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TrainingError(f"out '{out}': exists and is not a folder; expected a folder for the trained model")
    if out.is_dir() and not resume and ((out / "model.safetensors").exists() or (out / CHECKPOINTS).exists()):
        if not overwrite:
            raise TrainingError(f"out '{out}': already holds a model or checkpoints; pass overwrite=True "
                                "(--overwrite) to replace it or resume=True (--resume) to continue it")
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


def _max_length(cfg: TrainConfig, start: StartingModel) -> int:
    positions = int(start.model.config.text_config.max_position_embeddings)
    return min(cfg.max_length or positions, positions)


def _accelerator(cfg: TrainConfig) -> Any:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps its options in process-wide singletons; a second run in the same process (a notebook,
    # the tests) may use other options. The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    try:
        return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                           gradient_accumulation_steps=cfg.grad_accum)  # fmt: skip
    except (ValueError, RuntimeError) as error:
        raise TrainingError(f"mixed_precision={cfg.mixed_precision!r}: not available here ({error}); "
                            "use 'no' or 'bf16' on the CPU") from error


def _dual_encoder(model: Any, lock: str) -> Any:
    """One module whose forward runs both towers, so data parallelism sees one forward per step."""
    import torch

    class DualEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
            clip, grad = self.model, torch.is_grad_enabled()
            with torch.set_grad_enabled(grad and lock != "image"):  # a frozen tower builds no graph (LiT)
                image = clip.visual_projection(clip.vision_model(pixel_values=pixel_values).pooler_output)
            with torch.set_grad_enabled(grad and lock not in ("text", "text_encoder")):
                pooled = clip.text_model(input_ids=input_ids).pooler_output
            with torch.set_grad_enabled(grad and lock != "text"):
                text = clip.text_projection(pooled)
            return image, text, clip.logit_scale

    return DualEncoder()


def _optimizer(model: Any, cfg: TrainConfig) -> Any:
    """AdamW (fused); no weight decay on gains, biases, norms and the temperature (as OpenCLIP)."""
    import torch

    def no_decay(name: str, parameter: torch.Tensor) -> bool:
        return parameter.ndim < 2 or "norm" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]  # fmt: skip
    try:  # one fused kernel: ~7x faster than the foreach default on the CPU (benchmarks/train.py), same formula
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True)
    except (RuntimeError, TypeError):  # a device or torch without the fused kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def _schedule(optimizer: Any, warmup: int, total: int) -> Any:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Run:
    """The state of one run: prepared objects, counters, and the loop."""

    def __init__(self, cfg: TrainConfig, accelerator: Any, start: StartingModel, collate: Collator,
                 val_pairs: Any, result: TrainResult) -> None:
        self.cfg, self.acc, self.start, self.collate, self.result = cfg, accelerator, start, collate, result
        self.val_collate = (Collator(val_pairs, start.tokenizer, start.preprocess, max_length=collate.max_length)
                            if val_pairs is not None and len(val_pairs) else None)  # fmt: skip
        model = start.model
        apply_lock(model, cfg.lock)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.micro_per_epoch = self._micro_batches(epoch=0)
        self.steps_per_epoch = len(self.micro_per_epoch) // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise TrainingError(f"grad_accum={cfg.grad_accum}: the data makes only {len(self.micro_per_epoch)} "
                                "batch(es) per epoch; lower grad_accum or batch_size")
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        optimizer = _optimizer(model, cfg)
        if not optimizer.param_groups[0]["params"] and not optimizer.param_groups[1]["params"]:
            raise TrainingError("lock: nothing left to train")
        self.scheduler = _schedule(optimizer, cfg.warmup_steps, self.total_steps)
        self.net, self.optimizer = accelerator.prepare(_dual_encoder(model, cfg.lock), optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        self.loss = ClipLoss()
        self.epoch, self.batch_in_epoch = 0, 0

    def _micro_batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(len(self.collate.pairs), self.cfg.batch_size, epoch=epoch, seed=self.cfg.seed,
                             world_size=self.acc.num_processes, rank=self.acc.process_index,
                             group_size=self.cfg.group_size)  # fmt: skip

    @property
    def model(self) -> Any:
        return self.acc.unwrap_model(self.net).model

    def run(self) -> TrainResult:
        out, cfg = self.result.out, self.cfg
        out.mkdir(parents=True, exist_ok=True)
        resumed = self._resume() if cfg.resume else None
        log = CsvLog(out / LOG_FILE, resume_step=resumed) if self.acc.is_main_process else None
        bar = self._progress()
        while self.result.steps < self.total_steps:
            batches = self._micro_batches(self.epoch)[: self.steps_per_epoch * cfg.grad_accum]
            steps_before, tried = self.result.steps, len(batches) - self.batch_in_epoch
            for batch in batch_loader(batches[self.batch_in_epoch:], self.collate, num_workers=cfg.num_workers):
                self.batch_in_epoch += 1
                row = self._micro_step(batch)
                if row is None:
                    continue
                metrics = self._maybe_evaluate(end_of_epoch=self.batch_in_epoch == len(batches))
                if log is not None:
                    log.write({**row, **metrics})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(_postfix(row, self.result.metrics), refresh=False)
                if cfg.save_every and self.result.steps % cfg.save_every == 0:
                    self._save_state()
                if self.result.steps >= self.total_steps:
                    break
            if self.batch_in_epoch >= len(batches):
                if tried and self.result.steps == steps_before and self.result.steps < self.total_steps:
                    raise TrainingDataError(
                        f"data '{self.collate.pairs.name}': a whole epoch gave no batch of two or more readable "
                        f"images ({self.result.bad_images} bad images so far); check the image files"
                    )
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if bar is not None:
            bar.close()
        return self._finish()

    def _micro_step(self, batch: Batch) -> dict[str, float] | None:
        """One micro-batch forward and backward; a row for the log when the optimizer stepped."""
        import torch

        counts = torch.tensor([len(batch.indices), batch.bad], dtype=torch.long, device=self.acc.device)
        smallest = _all_min(counts[0].clone(), self.acc)
        totals = self.acc.reduce(counts.clone(), reduction="sum") if self.acc.num_processes > 1 else counts
        self.result.bad_images += int(totals[1])
        if smallest < 2:  # a process without a pair (or a batch of one) has no contrastive batch: skip everywhere
            return None
        with self.acc.accumulate(self.net):
            image, text, scale = self.net(batch.pixel_values.to(self.acc.device), batch.input_ids.to(self.acc.device))
            loss = self.loss(image.float(), text.float(), scale.float())
            self.acc.backward(loss)
            self.optimizer.step()
            stepped = self.acc.sync_gradients
            if stepped:
                self.scheduler.step()
                clamp_logit_scale_(self.model.logit_scale)
            self.optimizer.zero_grad(set_to_none=True)
        self.result.samples += int(totals[0])
        if not stepped:
            return None
        self.result.steps += 1
        return {"step": self.result.steps, "epoch": self.epoch, "samples": self.result.samples,
                "loss": float(loss.detach()), "lr": self.scheduler.get_last_lr()[0],
                "scale": float(self.model.logit_scale.detach().exp()), "bad_images": self.result.bad_images}

    def _maybe_evaluate(self, *, end_of_epoch: bool) -> dict[str, float]:
        every, last = self.cfg.eval_every, self.result.steps >= self.total_steps
        due = (every is None and end_of_epoch) or (bool(every) and self.result.steps % every == 0)
        if self.val_collate is None or every == 0 or not (due or last):
            return {}
        metrics = {}
        if self.acc.is_main_process:
            batches = epoch_batches(len(self.val_collate.pairs), self.cfg.batch_size, epoch=0, seed=0, shuffle=False)
            if len(self.val_collate.pairs) > self.cfg.batch_size and len(self.val_collate.pairs) % self.cfg.batch_size:
                batches.append(list(range(len(batches) * self.cfg.batch_size, len(self.val_collate.pairs))))
            bad = []
            loader = (bad.append(b.bad) or b for b in batch_loader(batches, self.val_collate))
            metrics = evaluate(self.model, loader, self.val_collate, labels=self.cfg.labels,
                               template=self.cfg.label_template, device=self.acc.device)
            self.result.val_bad_images = sum(bad)
            self.result.metrics = metrics
        self.acc.wait_for_everyone()
        return metrics

    def _progress(self) -> Any:
        if not (self.cfg.progress and self.acc.is_main_process):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.result.steps, desc="train", unit="step", dynamic_ncols=True)

    def _save_state(self) -> None:
        folder = self.result.out / CHECKPOINTS / f"step_{self.result.steps}"
        self.acc.save_state(str(folder))
        if self.acc.is_main_process:
            state = {"steps": self.result.steps, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                     "samples": self.result.samples, "bad_images": self.result.bad_images,
                     "processes": self.acc.num_processes, "config": self.cfg.to_dict()}
            (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        self.acc.wait_for_everyone()

    def _resume(self) -> int | None:
        """Load the newest complete checkpoint; the step it was taken at, or None when there is none."""
        folders = [p for p in (self.result.out / CHECKPOINTS).glob("step_*") if (p / STATE_FILE).is_file()]
        if not folders:
            return None
        folder = max(folders, key=lambda p: int(p.name.split("_")[1]))
        state = json.loads((folder / STATE_FILE).read_text())
        saved = {**state.get("config", {}), "processes": state.get("processes", 1)}
        now = {**self.cfg.to_dict(), "processes": self.acc.num_processes}
        lined_up = ("seed", "batch_size", "grad_accum", "group_size", "processes")  # what fixes the batches' order
        changed = [k for k in lined_up if saved.get(k, now[k]) != now[k]]
        if changed:
            raise TrainingError(
                f"resume: checkpoint '{folder}' was made with {', '.join(f'{k}={saved[k]}' for k in changed)}, this "
                f"run has {', '.join(f'{k}={now[k]}' for k in changed)}; the batches would not line up, use the same "
                "values (or start a new run with overwrite)"
            )
        self.acc.load_state(str(folder))
        self.result.steps, self.result.samples = state["steps"], state["samples"]
        self.result.bad_images, self.epoch = state["bad_images"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        return self.result.steps

    def _finish(self) -> TrainResult:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            model = self.model
            model.eval()
            save_model_folder(self.start, model, self.result.out)
            if self.cfg.plot and (self.result.out / LOG_FILE).is_file() and self.result.steps:
                plot_log(self.result.out / LOG_FILE, self.result.out / CURVES_FILE)
        self.acc.wait_for_everyone()
        return self.result


def _all_min(value: torch.Tensor, accelerator: Any) -> int:
    if accelerator.num_processes == 1:
        return int(value)
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value)


def _postfix(row: dict[str, float], metrics: dict[str, float]) -> dict[str, str]:
    shown = {"loss": f"{row['loss']:.3f}", "scale": f"{row['scale']:.1f}"}
    for key, name in (("zero_shot_acc", "acc"), ("t2i_r1", "t2i@1"), ("i2t_r1", "i2t@1")):
        if key in metrics:
            shown[name] = f"{metrics[key]:.2f}"
    return shown
