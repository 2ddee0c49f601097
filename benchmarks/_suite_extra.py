"""GPU suite, the rest: training (section 5), profiler tables, and torch.compile in bounded child processes.

* training: sdclip has no training module yet; the case says so (and how many GPUs there are).
* profiles: ``torch.profiler`` over batch-1 conditioning (sdclip with CUDA graphs vs diffusers) and
  over scoring files, written as tables next to the JSON, with GPU-busy time against wall time per
  call: where wall time far exceeds GPU time, the work is launch- or CPU-bound.
* compile: ``torch.compile`` of the vision tower (bf16, the larger batch) and of the SD 1.x text
  encoder with ``mode="reduce-overhead"`` (batch 1, against diffusers, sdclip eager and sdclip's CUDA
  graphs). Each runs in a child process (``gpu_suite.py --child NAME``) killed past its time budget,
  so a long compilation costs at most that budget and never the data already written.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from _harness import NEGATIVE, interleaved_medians, synchronize
from _suite_text import DTYPES, agreement, build_pipe, diffusers_encode
from _suite_vision import build_clip, peak_tflops, throughput

RESULT_PREFIX = "CHILD_RESULT "


# -- 5. training --------------------------------------------------------------------------------


def _training_case(suite, size: str, batch_size: int, bf16: bool) -> dict:
    """samples/s of one sdclip.training optimizer step and of the transformers-docs loop, same model and batch."""
    import train as train_bench  # benchmarks/train.py: the step objects both share

    device = suite.plan.device
    step, batch, initial, _ = train_bench.sdclip_step(size, batch_size, mixed_precision="bf16" if bf16 else "no")
    plain = train_bench.plain_step(size, batch, initial, device, bf16)
    for fn in (step, plain):  # warm-up: allocator, kernels, optimizer state
        for _ in range(1 if suite.plan.dry_run else 3):
            fn()
    synchronize(device)
    repeats = 1 if suite.plan.dry_run else 10
    timings = {}
    for name, fn in (("sdclip", step), ("plain", plain)):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        synchronize(device)
        timings[name] = batch_size * repeats / (time.perf_counter() - start)
    ratio = timings["sdclip"] / timings["plain"]
    suite.ratio(f"train_step_{size}_{'bf16' if bf16 else 'fp32'}", ratio)
    return {"size": size, "batch_size": batch_size, "bf16": bf16, "sdclip_samples_per_s": round(timings["sdclip"], 2),
            "plain_loop_samples_per_s": round(timings["plain"], 2), "sdclip_vs_plain": round(ratio, 3),
            "summary": f"{size} bf16={bf16} batch {batch_size}: sdclip {timings['sdclip']:.1f} samples/s, "
                       f"plain loop {timings['plain']:.1f} ({ratio:.2f}x)"}  # fmt: skip


def run_training(suite) -> None:
    """Training throughput: ViT-B/16- and L/14-sized CLIP in bf16 on the GPU (a small model, fp32, in the dry run)."""
    cuda = suite.plan.device.startswith("cuda")
    gpus = torch.cuda.device_count() if cuda else 0
    sizes = (("small", 4),) if suite.plan.dry_run else (("b16", 128), ("l14", 64))
    for size, batch_size in sizes:
        suite.case("training", f"samples-per-s-{size}",
                   lambda size=size, batch_size=batch_size: _training_case(suite, size, batch_size, cuda),
                   needs_s=0 if suite.plan.dry_run else 60)  # fmt: skip
    suite.case("training", "1-vs-n-processes", lambda: {
        "status": "skipped", "gpus": gpus,
        "reason": f"{gpus} GPU{'s' if gpus != 1 else ''} here; " + ("one process only" if gpus < 2 else
                  "run benchmarks/train.py under accelerate launch --multi_gpu for the scaling")})


# -- profiles -----------------------------------------------------------------------------------


def _profile(suite, name: str, fn, calls: int) -> dict:
    """Wall ms per call (unprofiled) and GPU-busy ms per call (profiled); the table goes to a file."""
    from torch.profiler import ProfilerActivity, profile

    device = suite.plan.device
    cuda = device.startswith("cuda")
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    wall_ms = 1000 * (time.perf_counter() - start) / calls
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)
    from torch.autograd import DeviceType

    events = prof.key_averages()
    path = suite.path.with_name(f"{suite.path.stem}-profile-{name}.txt")
    path.write_text(events.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=25))
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    device_us = sum(e.self_device_time_total for e in kernels)  # as the table's total: kernels on every stream

    def top(items, attribute):
        ranked = sorted(items, key=lambda e: getattr(e, attribute), reverse=True)[:5]
        return [(e.key[:80], round(getattr(e, attribute) / 1000 / calls, 3)) for e in ranked]

    return {"wall_ms_per_call": round(wall_ms, 3),
            "gpu_kernel_ms_per_call": round(device_us / 1000 / calls, 3) if cuda else None,
            "kernels_per_call": round(sum(e.count for e in kernels) / calls, 1) if cuda else None,
            "top_kernels_ms_per_call": top(kernels, "self_device_time_total") if cuda else None,
            "top_cpu_ops_ms_per_call": top([e for e in events if e.device_type == DeviceType.CPU], "self_cpu_time_total"),
            "table": path.name}  # fmt: skip


def run_profiles(suite) -> None:
    suite.case("profile", "text-batch1", lambda: _profile_text(suite), needs_s=20)
    suite.case("profile", "files-fast", lambda: _profile_files(suite), needs_s=20)


def _profile_text(suite) -> dict:
    from sdclip import TextConditioner

    pipe = suite.state["sd1_pipe"]
    graphs = TextConditioner.from_pipeline(pipe, cache_size=0, cuda_graphs=True)
    prompt, calls = ["a photo of an astronaut riding a horse"], max(suite.plan.calls.get(1, 1), 2)
    ours = _profile(suite, "text-sdclip-graphs", lambda: graphs.encode(prompt), calls)
    theirs = _profile(suite, "text-diffusers", lambda: diffusers_encode(pipe, "sd1", suite.plan.device, prompt), calls)
    summary = (f"per call: sdclip graphs {ours['wall_ms_per_call']:.2f} ms wall / {ours['gpu_kernel_ms_per_call']} ms "
               f"in {ours['kernels_per_call']} kernels; diffusers {theirs['wall_ms_per_call']:.2f} ms wall / "
               f"{theirs['gpu_kernel_ms_per_call']} ms in {theirs['kernels_per_call']} kernels")
    return {"sdclip_graphs": ours, "diffusers": theirs, "dtype": str(pipe.text_encoder.dtype), "summary": summary}


def _profile_files(suite) -> dict:
    from sdclip import ClipScorer, load_tokenizer

    plan = suite.plan
    dtype, batch = plan.dtypes[-1], max(plan.vision_batches)
    paths = suite.state["files"][: 4 * batch] if plan.files > 4 * batch else suite.state["files"]
    scorer = ClipScorer(suite.state["clip"][dtype], load_tokenizer(), batch_size=batch, preprocessing="fast",
                        workers=plan.workers, gpu_decode=True)  # fmt: skip
    result = _profile(suite, "files-fast", lambda: scorer.score(paths, "a cat"), 1)
    gpu = result["gpu_kernel_ms_per_call"]
    result["summary"] = (f"{len(paths)} files: {result['wall_ms_per_call']:.0f} ms wall, GPU kernels {gpu} ms"
                         + (f" ({100 * gpu / result['wall_ms_per_call']:.0f}% of wall)" if gpu else ""))
    return result


# -- torch.compile, in children -----------------------------------------------------------------


def run_compile(suite) -> None:
    for name in ("text", "vision"):  # text first: the smaller compilation, and the batch-1 question
        suite.case("compile", name, lambda: _spawn(suite, name), needs_s=45)


def _spawn(suite, name: str) -> dict:
    plan = suite.plan
    budget = max(10.0, min(plan.compile_cap_s, suite.remaining() - 5))
    command = [sys.executable, str(Path(__file__).with_name("gpu_suite.py")), "--child", name,
               "--device", plan.device, "--workers", str(plan.workers)] + (["--dry-run"] if plan.dry_run else [])
    if suite.state.get("peak_tflops"):
        command += ["--peak-tflops", str(suite.state["peak_tflops"])]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # its own process group: killed with its compile workers
    try:
        output, _ = child.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
        return {"status": "skipped", "reason": f"over its {budget:.0f} s budget (killed)", "output_tail": output[-2000:]}
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"child exited with {child.returncode}: {output[-1500:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    for key, value in result.pop("ratios", {}).items():
        suite.ratio(key, value)
    result["budget_s"] = round(budget)
    return result


def child_main(plan, name: str) -> int:
    """Entry point of ``gpu_suite.py --child NAME``: run one compile case, print its result as JSON."""
    result = {"vision": _compile_vision, "text": _compile_text}[name](plan)
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


def _compile_vision(plan) -> dict:
    dtype = plan.dtypes[-1]
    model = build_clip(plan).to(DTYPES[dtype])
    batch = max(plan.vision_batches)
    size = model.config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, device=plan.device, dtype=DTYPES[dtype])

    def eager():
        return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

    compiled = torch.compile(eager, backend=plan.compile_backend)
    with torch.inference_mode():
        start = time.perf_counter()
        out = compiled()
        synchronize(plan.device)
        compile_s = time.perf_counter() - start
        reference = eager()
    eager_ips = throughput(eager, batch, device=plan.device, min_s=plan.min_s)
    compiled_ips = throughput(compiled, batch, device=plan.device, min_s=plan.min_s)
    from score import vision_gflop

    tflops = compiled_ips * vision_gflop(model.config) / 1000
    card = torch.cuda.get_device_name(plan.device) if plan.device.startswith("cuda") else "cpu"
    peak = peak_tflops(card, None)
    relative = (out.float() - reference.float()).abs().max().item() / max(1.0, reference.float().abs().max().item())
    share = tflops / peak if peak else None
    return {"dtype": dtype, "batch": batch, "backend": plan.compile_backend, "compile_s": round(compile_s, 1),
            "eager_images_per_s": round(eager_ips, 1), "compiled_images_per_s": round(compiled_ips, 1),
            "tflops": round(tflops, 1), "share_of_peak": share, "relative_diff_vs_eager": relative,
            "ratios": {f"compile_vision_{dtype}_batch{batch}_vs_eager": compiled_ips / eager_ips},
            "summary": f"compiled {compiled_ips:.0f} vs eager {eager_ips:.0f} images/s ({compile_s:.0f} s to compile)"
                       + (f", {100 * share:.1f}% of peak" if share else "")}  # fmt: skip


def _compile_text(plan) -> dict:
    from sdclip import TextConditioner

    dtype = plan.dtypes[0]
    pipe, error = build_pipe("sd1", plan.device, plan.dry_run)
    if error:
        raise RuntimeError(error)
    pipe.text_encoder.to(DTYPES[dtype])
    encoder = copy.deepcopy(pipe.text_encoder)
    if plan.compile_backend == "inductor":
        encoder.compile(mode="reduce-overhead", dynamic=False)
    else:
        encoder.compile(backend=plan.compile_backend)
    compiled = TextConditioner.from_pipeline(SimpleNamespace(text_encoder=encoder, tokenizer=pipe.tokenizer),
                                             cache_size=0)  # fmt: skip
    start = time.perf_counter()
    for _ in range(3):  # compile, then the warm-up runs reduce-overhead records its graphs in
        compiled.encode("a cat", NEGATIVE)
    synchronize(plan.device)
    compile_s = time.perf_counter() - start
    check = agreement(compiled.encode(["a red fox"], NEGATIVE),
                      diffusers_encode(pipe, "sd1", plan.device, ["a red fox"], [NEGATIVE]), "sd1", dtype)
    conditioners = {"sdclip": TextConditioner.from_pipeline(pipe, cache_size=0),
                    "sdclip_graphs": TextConditioner.from_pipeline(pipe, cache_size=0, cuda_graphs=True),
                    "sdclip_compiled": compiled}
    prompts, calls = ["a photo of an astronaut riding a horse"], plan.calls.get(1, 1)
    runs = {name: (lambda c=cond: [c.encode(prompts) for _ in range(calls)]) for name, cond in conditioners.items()}
    runs["diffusers"] = lambda: [diffusers_encode(pipe, "sd1", plan.device, prompts) for _ in range(calls)]
    medians = interleaved_medians(runs, device=plan.device, warmup=2, repeats=plan.repeats)
    per_s = {name: calls / seconds for name, seconds in medians.items()}
    ratios = {f"compile_text_sd1_{dtype}_batch1_{name}_vs_diffusers": per_s[name] / per_s["diffusers"]
              for name in conditioners}
    return {"dtype": dtype, "mode": "reduce-overhead" if plan.compile_backend == "inductor" else plan.compile_backend,
            "compile_s": round(compile_s, 1), "check": check, **{f"{k}_prompts_per_s": round(v, 1) for k, v in per_s.items()},
            "ratios": ratios,
            "summary": "prompts/s at batch 1: " + ", ".join(f"{k} {v:.0f}" for k, v in per_s.items())
                       + f"; compiled vs diffusers {ratios[f'compile_text_sd1_{dtype}_batch1_sdclip_compiled_vs_diffusers']:.2f}"
                       + f"; check {'ok' if check['ok'] else 'FAILED'}"}  # fmt: skip
