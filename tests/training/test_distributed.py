"""2 processes x batch 8 (gloo, CPU) give the gradients and the run of 1 process x batch 16."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def _worker():
    spec = importlib.util.spec_from_file_location("distributed_worker", HERE / "distributed_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    from safetensors.torch import load_file

    from sdclip.training import read_log, train

    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "distributed_worker.py"), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    worker = _worker()
    saved = torch.load(tmp_path / "grads.pt")
    for case, drop in (("even", None), ("uneven", worker.GLOBAL_BATCH - 1)):
        single, double = worker.gradients(worker.GLOBAL_BATCH, drop=drop), saved[case]
        assert sorted(single) == sorted(double)
        for name in single:  # within 1e-5 (float32 sums in another order)
            torch.testing.assert_close(double[name], single[name], atol=1e-5, rtol=1e-4, msg=f"{case} {name}")
        assert max(float(g.abs().max()) for g in single.values()) > 1e-3  # the gradients are not trivially zero

    train(worker.pairs(), model=worker.SMALL, out=tmp_path / "one", batch_size=worker.GLOBAL_BATCH, progress=False,
          lr=1e-3, val_fraction=0.25, eval_every=1)  # fmt: skip
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "model" / "model.safetensors"))
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-4, rtol=1e-4, msg=name)
    log_one, log_two = read_log(tmp_path / "one" / "train_log.csv"), read_log(tmp_path / "model" / "train_log.csv")
    assert [r["samples"] for r in log_two] == [r["samples"] for r in log_one] == [16.0]
    assert log_two[0]["loss"] == pytest.approx(log_one[0]["loss"], abs=1e-4)
    assert (tmp_path / "model" / "checkpoints" / "step_1" / "trainer_state.json").is_file()
