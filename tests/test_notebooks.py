"""The notebooks in ``notebooks/``: committed without outputs, and each runs top to bottom on the tiny models.

Execution uses nbclient with a fresh kernel in the repository root, this checkout on ``PYTHONPATH``, the
hub offline, and ``SDCLIP_NOTEBOOK_MODEL=tiny`` so the notebooks build tiny random models instead of
looking for real weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL = 300

def test_the_four_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == ["01_conditioning.ipynb", "02_inspection.ipynb", "03_scoring.ipynb",
                                                 "04_training.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "strip outputs before committing"
    assert "SDCLIP_NOTEBOOK_MODEL" in code[0].source  # the first cell picks the model


def run_notebook(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "SDCLIP_NOTEBOOK_MODEL": "tiny",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "TMPDIR": str(tmp_path),
    }
    client = NotebookClient(notebook, timeout=TIMEOUT_PER_CELL, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})  # fmt: skip
    client.execute(env=env)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the notebook printed, and how many PNG images it showed."""
    text, pngs = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            data = output.get("data", {})
            text.append(data.get("text/plain", ""))
            pngs += "image/png" in data
    return "\n".join(text), pngs


@pytest.mark.slow
def test_01_conditioning_runs(tmp_path):
    text, pngs = outputs(run_notebook("01_conditioning.ipynb", tmp_path))
    assert "tiny RANDOM" in text and "identical to diffusers: True True" in text
    assert pngs >= 1


@pytest.mark.slow
def test_02_inspection_runs(tmp_path):
    text, pngs = outputs(run_notebook("02_inspection.ipynb", tmp_path))
    assert "tiny RANDOM" in text and "pooled cosine" in text
    assert "MODEL for this comparison: sdclip:shapes" in text  # prompt similarities on the trained demo model
    assert "nearest to <my-style> -> [('watercolor</w>'" in text or "nearest to <my-style> -> [('painting</w>'" in text
    assert pngs == 3  # per-token bars, token heatmap, prompt heatmap


@pytest.mark.slow
def test_03_scoring_runs(tmp_path):
    text, pngs = outputs(run_notebook("03_scoring.ipynb", tmp_path))
    assert "sdclip:shapes, the small trained demo model" in text and "CLIP score of the batch" in text
    # the trained demo model picks the image that fits each prompt (by its colour) out of four
    assert "best of 4 for 'a red circle': image 1 " in text and "best of 4 for 'a blue star': image 3 " in text
    assert "score_histogram.png" in text
    assert pngs >= 3


@pytest.mark.slow
def test_04_training_runs(tmp_path):
    text, pngs = outputs(run_notebook("04_training.ipynb", tmp_path))
    assert "fine-tuning steps: 10" in text and "10 steps, 320 pairs seen" in text
    assert "accuracy before" in text and "-> after" in text
    assert pngs >= 2  # the examples and the training curves
