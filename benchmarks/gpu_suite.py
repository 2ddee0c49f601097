"""The GPU suite: every GPU figure of sdclip in one command, written as it goes (issue 14).

Real architectures with random weights (clip-vit-large-patch14, OpenCLIP bigG), fp16 and bf16:

1. text conditioning, SD 1.x and SDXL: sdclip (eager and ``cuda_graphs=True``) vs diffusers'
   ``encode_prompt`` at batch 1, 8, 64 and ``encode.py``'s realistic workload, after checking that
   the tensors agree within the dtype's tolerance;
2. scoring, model only: vision-tower images/s at batch 64 and 256 per SDPA backend, as TFLOP/s and
   as a share of the card's dense bf16 peak;
3. scoring from files: 1,000 generated 512x512 JPEGs and PNGs through ``ClipScorer`` and the
   ``sdclip score`` command, as images/s and as a share of (2), with the CPU decoders' capacity;
4. the peers in the same run: torchmetrics' CLIPScore per pair and the CLIPProcessor + CLIPModel loop;
5. training: samples/s of ``sdclip.training``'s step vs the transformers-docs loop, ViT-B/16- and
   L/14-sized in bf16 (``benchmarks/train.py``'s objects); multi-GPU; then short ``torch.profiler`` tables and, in child
   processes with a bounded time each, ``torch.compile`` variants (vision tower; reduce-overhead text).

Every case is timed apart and may fail alone (its error is recorded, the suite goes on). The JSON
(``<out-dir>/gpu-<card>-<date>.json``) is rewritten after every case, so a run cut short keeps what
it measured. ``--dry-run`` runs every case on the CPU with tiny shapes in seconds (CI runs it).

Run (repository root):  python benchmarks/gpu_suite.py [--out-dir DIR] [--budget-s 285] [--no-compile]
                        python benchmarks/gpu_suite.py --dry-run --out-dir /tmp/suite
Ends with a table and one ``RATIO <name> <value>`` line per comparison (> 1: sdclip is faster).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never wait for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper modules
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # sdclip from this checkout

_START = time.perf_counter()
TARGETS = {"text_batch1_graphs_vs_diffusers": 1.5, "vision_share_of_peak": 0.40, "files_share_of_model": 0.90,
           "vs_torchmetrics": 10.0, "vs_loop": 3.0}  # fmt: skip


def log(message: str) -> None:
    """A progress line with the time since start and the wall clock, flushed at once."""
    print(f"[{time.perf_counter() - _START:7.1f}s {dt.datetime.now():%H:%M:%S}] {message}", flush=True)


@dataclass(frozen=True)
class Plan:
    """What to run and how big: the real run on a GPU, or the dry run's tiny shapes on the CPU."""

    dry_run: bool
    device: str
    dtypes: tuple[str, ...]
    text_batches: tuple[int, ...] = (1, 8, 64)
    calls: dict = field(default_factory=lambda: {1: 20, 8: 5, 64: 2})  # encode calls per timed run
    requests: int = 128
    repeats: int = 5
    vision_batches: tuple[int, ...] = (64, 256)
    backends: tuple[str, ...] = ("default", "flash", "cudnn", "efficient")
    min_s: float = 1.0  # seconds of work per vision-tower measurement
    files: int = 1000
    image_size: int = 512
    peer_prompts: int = 32
    workers: int = 16
    compile_backend: str = "inductor"
    compile_cap_s: float = 110.0
    budget_s: float = 285.0

    @classmethod
    def make(cls, args: argparse.Namespace) -> Plan:
        workers = args.workers or max(1, min(32, len(os.sched_getaffinity(0))))  # a decoding thread per core
        if args.dry_run:
            return cls(True, "cpu", ("fp32", "bf16"), text_batches=(1, 3, 9), calls={1: 2}, requests=6, repeats=1,
                       vision_batches=(2, 4), backends=("default", "math"), min_s=0.0, files=8, image_size=96,
                       peer_prompts=2, workers=min(workers, 2), compile_backend="eager", compile_cap_s=60.0,
                       budget_s=args.budget_s)  # fmt: skip
        return cls(False, args.device, ("fp16", "bf16"), workers=workers, budget_s=args.budget_s)


class Suite:
    """Runs cases, records each (ok / error / skipped) and rewrites the JSON after every one."""

    def __init__(self, plan: Plan, path: Path, meta: dict) -> None:
        self.plan, self.path = plan, path
        self.data = {"suite": "sdclip benchmarks/gpu_suite.py", **meta, "plan": asdict(plan), "cases": [],
                     "ratios": {}, "targets": {}, "finished": None}  # fmt: skip
        self.state: dict = {}  # what later sections reuse: models, image files, measured throughputs

    def remaining(self) -> float:
        return self.plan.budget_s - (time.perf_counter() - _START)

    def case(self, section: str, name: str, run: Callable[[], dict | None], *, needs_s: float = 0.0) -> dict:
        """Run one case; its dict of figures (with a ``summary`` line) goes into the JSON."""
        record: dict = {"section": section, "name": name}
        if needs_s and self.remaining() < needs_s:
            record.update(status="skipped", reason=f"time budget: {self.remaining():.0f} s left, needs ~{needs_s:.0f} s")
            log(f"{section}/{name}: skipped ({record['reason']})")
            return self._add(record)
        log(f"{section}/{name} ...")
        start = time.perf_counter()
        try:
            record.update(run() or {})
            record.setdefault("status", "ok")
        except Exception as error:  # one failing case never stops the suite
            record.update(status="error", error=f"{type(error).__name__}: {error}"[:2000],
                          traceback=traceback.format_exc()[-3000:])
        record["seconds"] = round(time.perf_counter() - start, 2)
        _free_memory()
        log(f"{section}/{name}: {record['status']} in {record['seconds']:.1f} s"
            + (f" | {record['summary']}" if record.get("summary") else "")
            + (f" | {record['error']}" if record.get("error") else ""))
        return self._add(record)

    def ratio(self, name: str, value: float | None, *, target: str | None = None) -> None:
        if value is None:
            return
        self.data["ratios"][name] = round(float(value), 4)
        if target is not None:
            self.data["targets"][name] = {"target": TARGETS[target], "value": round(float(value), 4),
                                          "met": bool(value >= TARGETS[target])}

    def _add(self, record: dict) -> dict:
        self.data["cases"].append(record)
        self.write()
        return record

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(temporary, self.path)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def metadata(plan: Plan) -> dict:
    """Card, software versions and machine, for the JSON's head."""
    import importlib.metadata as md
    import platform

    import torch

    versions = {}
    for package in ("torch", "transformers", "diffusers", "huggingface_hub", "torchvision", "torchmetrics",
                    "accelerate", "Pillow", "numpy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    cuda = plan.device.startswith("cuda")
    card = torch.cuda.get_device_name(plan.device) if cuda else "cpu (dry run)" if plan.dry_run else "cpu"
    from _harness import machine_name

    return {"card": card, "gpus": torch.cuda.device_count() if cuda else 0, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "cpu": machine_name("cpu"),
            "python": platform.python_version(), "cpu_cores": os.cpu_count(), "versions": versions,
            "started": dt.datetime.now().isoformat(timespec="seconds")}  # fmt: skip


def print_table(suite: Suite) -> None:
    print(f"\n{'section':<8} {'case':<34} {'status':<8} {'s':>6}  figures", flush=True)
    for case in suite.data["cases"]:
        text = case.get("summary") or case.get("reason") or case.get("error", "")
        print(f"{case['section']:<8} {case['name']:<34} {case['status']:<8} {case.get('seconds', 0):>6.1f}  {text[:150]}")
    print()
    for name, target in suite.data["targets"].items():
        print(f"TARGET {name}: {target['value']:.3f} (target >= {target['target']}) {'met' if target['met'] else 'MISSED'}")
    for name, value in suite.data["ratios"].items():
        print(f"RATIO {name} {value:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every case on the CPU with tiny shapes (seconds)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=285.0, help="optional cases are skipped past this")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: one per core)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by card name)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile child processes")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler tables")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # a compile case, in a child process
    args = parser.parse_args(argv)

    import torch

    import _suite_extra
    import _suite_files
    import _suite_text
    import _suite_vision

    plan = Plan.make(args)
    if plan.dry_run:
        torch.set_num_threads(1)  # tiny models: OpenMP spin-waits on a shared CPU cost more than a 2nd thread gains
    if args.child:
        return _suite_extra.child_main(plan, args.child)
    if not plan.dry_run and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device; run with --dry-run on a CPU-only machine", file=sys.stderr)
        return 2
    meta = metadata(plan)
    slug = re.sub(r"[^a-z0-9]+", "-", meta["card"].lower()).strip("-")
    path = Path(args.out_dir) / f"gpu-{slug}-{dt.datetime.now():%Y-%m-%d-%H%M%S}.json"
    suite = Suite(plan, path, meta)
    suite.state["peak_tflops"] = args.peak_tflops
    log(f"gpu_suite: {meta['card']} | torch {torch.__version__} | {'dry run, ' if plan.dry_run else ''}"
        f"budget {plan.budget_s:.0f} s | writing {path}")
    try:
        _suite_text.run(suite)
        _suite_vision.run_model_only(suite)
        _suite_files.run(suite)
        _suite_vision.run_peers(suite)
        _suite_extra.run_training(suite)
        if not args.no_profile:
            _suite_extra.run_profiles(suite)
        if not args.no_compile:
            _suite_extra.run_compile(suite)
    finally:  # the generated images and the saved model
        if suite.state.get("tmp"):
            shutil.rmtree(suite.state["tmp"], ignore_errors=True)
    suite.data["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    suite.data["elapsed_s"] = round(time.perf_counter() - _START, 1)
    suite.write()
    print_table(suite)
    log(f"done: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
