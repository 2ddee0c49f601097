"""``sdclip score`` resuming part files in one process (no launcher): multi-metric rows flow through parts
unchanged, the merged file equals a single-process run, and leftover parts are refused without --resume."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdclip.cli import main


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")


def setup(tmp_path, tiny_clip_folder):
    rs = np.random.RandomState(7)
    (tmp_path / "imgs").mkdir()
    for index in range(5):
        Image.fromarray(rs.randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"i{index}.png")
    generator = torch.Generator().manual_seed(3)
    save_file({"layers.0.weight": torch.randn(16, 96, generator=generator), "layers.0.bias": torch.zeros(16),
               "layers.2.weight": torch.randn(1, 16, generator=generator), "layers.2.bias": torch.zeros(1)},
              tmp_path / "aesthetic.safetensors")
    return lambda out, *extra: ["score", "--images", str(tmp_path / "imgs"), "--prompt", "a cat", "--model",
                                str(tiny_clip_folder), "--device", "cpu", "--metric", "clip,aesthetic", "--weights",
                                f"aesthetic={tmp_path / 'aesthetic.safetensors'}", "--batch-size", "2", "--out",
                                str(out), *extra]


def test_parts_of_a_killed_multi_metric_run_resume_to_the_single_process_file(tiny_clip_folder, tmp_path, capsys):
    args = setup(tmp_path, tiny_clip_folder)
    assert main(args(tmp_path / "one.csv")) == 0
    reference = (tmp_path / "one.csv").read_text().splitlines()
    header, rows = reference[0], reference[1:]
    assert header == "image,prompt,score,rank,error,clip,aesthetic"
    # rank 1 of a 2-process run flushed one of its 3 rows, then was killed mid-line; rank 0 wrote nothing
    unranked = rows[3].split(",")
    unranked[3] = ""
    (tmp_path / "run.part-00001-of-00002.csv").write_text("\n".join([header, ",".join(unranked), rows[4][:9]]))
    (tmp_path / "run.part-00000-of-00002.csv").write_text(header + "\n")
    capsys.readouterr()
    assert main(args(tmp_path / "run.csv")) == 2
    assert ("part files of an unfinished run are next to it (run.part-00000-of-00002.csv, "
            "run.part-00001-of-00002.csv); pass --resume") in " ".join(capsys.readouterr().err.split())
    assert main(args(tmp_path / "run.csv", "--resume")) == 0
    assert "1 pairs already scored, 4 to go on 1 process(es)" in " ".join(capsys.readouterr().err.split())
    got = list(csv.DictReader((tmp_path / "run.csv").open()))
    want = list(csv.DictReader((tmp_path / "one.csv").open()))
    assert [(r["image"], r["rank"], r["error"]) for r in got] == [(r["image"], r["rank"], r["error"]) for r in want]
    for column in ("score", "clip", "aesthetic"):
        assert np.allclose([float(r[column]) for r in got], [float(r[column]) for r in want], atol=1e-5)
    assert sorted(p.name for p in tmp_path.glob("run*")) == ["run.csv"]
