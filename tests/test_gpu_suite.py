"""benchmarks/gpu_suite.py: its dry run exercises every case on the CPU, so the suite never rots.

The dry run (tiny shapes, fp32 and bf16 on the CPU) runs each section the GPU run does, incl. the
compile child processes, the ``sdclip score`` command and the peers; its own correctness checks
compare sdclip with diffusers' ``encode_prompt`` and transformers' ``get_image_features`` and must
pass. A unit test checks that one failing case is recorded and the suite goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--budget-s", "100000", "--out-dir", str(out)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = list(out.glob("gpu-cpu-dry-run-*.json"))
    assert len(files) == 1, sorted(p.name for p in out.iterdir())
    return json.loads(files[0].read_text()), done.stdout, out


def cases(data: dict, section: str) -> dict[str, dict]:
    return {case["name"]: case for case in data["cases"] if case["section"] == section}


@pytest.mark.slow
def test_dry_run_runs_every_case_and_its_checks_pass(dry_run):
    data, _, _ = dry_run
    failed = [(c["section"], c["name"], c.get("error")) for c in data["cases"] if c["status"] not in ("ok", "skipped")]
    assert failed == []
    assert data["finished"] and data["card"] == "cpu (dry run)" and data["plan"]["dtypes"] == ["fp32", "bf16"]
    text = cases(data, "text")
    for kind in ("sd1", "sdxl"):
        for dtype in ("fp32", "bf16"):
            check = text[f"{kind}-{dtype}-check"]
            assert check["all_ok"] and check["eager_batch8"]["relative"] <= 1e-4  # sdclip vs diffusers
            assert check["cuda_graph_status"]["eager_calls"] > 0  # on the CPU the graphed path runs eagerly
            for workload in ("batch1", "batch3", "batch9", "realistic"):
                case = text[f"{kind}-{dtype}-{workload}"]
                assert case["sdclip_graphs_vs_diffusers"] > 0 and case["diffusers_prompts_per_s" if workload != "realistic"
                                                                         else "diffusers_requests_per_s"] > 0
    assert text["sd3"]["status"] == "skipped" and "no SD3" in text["sd3"]["reason"]
    vision = cases(data, "vision")
    assert vision["fp32-check"]["ok"] and vision["bf16-check"]["ok"]  # image features vs transformers
    assert {"fp32-batch4-math", "bf16-batch2-default"} <= set(vision) and vision["fp32-batch4-default"]["images_per_s"] > 0
    files = cases(data, "files")
    assert files["generate"]["files"] == 8 and files["cpu-decode"]["decode_png_per_s"] > 0
    gpu_decode = files["scorer-fast-bf16-batch4-gpu-decode"]
    assert gpu_decode["gpu_decode_active"] is False and gpu_decode["max_score_diff_vs_cpu_decode"] == 0  # CPU fallback
    for name in ("cli-defaults", "cli-fast"):
        assert files[name]["rows"] == 8 and files[name]["failed_rows"] == 0
    peers = cases(data, "peers")["best-of-4"]
    assert peers["max_diff_vs_loop"] < 1e-3 and peers["max_diff_vs_torchmetrics"] < 1e-3  # fp32: same scores
    assert peers["usage_note_loop_images_per_s"] > 0 and peers["torchmetrics_per_pair_images_per_s"] > 0
    training = cases(data, "training")
    small = training["samples-per-s-small"]  # sdclip.training's step and the transformers-docs loop
    assert small["status"] == "ok" and small["sdclip_samples_per_s"] > 0 and small["plain_loop_samples_per_s"] > 0
    compiled = cases(data, "compile")
    assert compiled["vision"]["relative_diff_vs_eager"] < 1e-4 and compiled["text"]["check"]["ok"]
    profiles = cases(data, "profile")
    assert profiles["text-batch1"]["sdclip_graphs"]["wall_ms_per_call"] > 0


@pytest.mark.slow
def test_dry_run_prints_ratios_and_writes_profiles(dry_run):
    data, stdout, out = dry_run
    ratio_lines = [line.split() for line in stdout.splitlines() if line.startswith("RATIO ")]
    assert {name for _, name, _ in ratio_lines} == set(data["ratios"]) and len(ratio_lines) > 20
    assert all(float(value) > 0 for _, _, value in ratio_lines)
    assert "text_sd1_bf16_batch1_sdclip_graphs_vs_diffusers" in data["targets"]
    assert "compile_text_sd1_fp32_batch1_sdclip_compiled_vs_diffusers" in data["ratios"]
    assert len(list(out.glob("*-profile-*.txt"))) == 3
    assert "[" in stdout.splitlines()[0] and "s " in stdout.splitlines()[0]  # timestamped progress


def test_a_failing_case_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_suite

    plan = gpu_suite.Plan(True, "cpu", ("fp32",), budget_s=1e6)
    path = tmp_path / "out.json"
    suite = gpu_suite.Suite(plan, path, {"card": "test"})

    def broken():
        raise RuntimeError("CUDA out of memory")

    suite.case("text", "broken", broken)
    assert json.loads(path.read_text())["cases"][0]["error"] == "RuntimeError: CUDA out of memory"  # written at once
    suite.case("text", "fine", lambda: {"summary": "1 prompt/s"})
    suite.ratio("x_vs_y", 2.0, target="vs_loop")
    suite.write()  # ratios are recorded inside cases, written with the case
    late = gpu_suite.Suite(gpu_suite.Plan(True, "cpu", ("fp32",), budget_s=0), tmp_path / "late.json", {})
    late.case("compile", "slow", lambda: {}, needs_s=30)
    data = json.loads(path.read_text())
    assert [c["status"] for c in data["cases"]] == ["error", "ok"]
    assert data["targets"]["x_vs_y"] == {"target": 3.0, "value": 2.0, "met": False}
    assert json.loads((tmp_path / "late.json").read_text())["cases"][0]["status"] == "skipped"
