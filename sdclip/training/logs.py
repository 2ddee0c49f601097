"""The training log: one CSV row per optimizer step, appended as the run goes, and PNG curves drawn from it.

Columns (``LOG_COLUMNS``): ``step``, ``epoch``, ``samples`` (pairs seen so far, all processes), ``loss``
(this step's contrastive loss), ``lr``, ``scale`` (``exp(logit_scale)``, the multiplier of the cosines, at
most 100), ``bad_images`` (so far), and on evaluation steps ``val_pairs``, ``zero_shot_acc``,
``i2t_r1/5/10``, ``t2i_r1/5/10``; empty cells where a step has no value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

LOG_COLUMNS = (
    "step", "epoch", "samples", "loss", "lr", "scale", "bad_images",
    "val_pairs", "zero_shot_acc", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
)  # fmt: skip


class CsvLog:
    """Appends rows to ``path`` (header written once; a resumed run keeps earlier rows, drops later ones).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
        >>> log = CsvLog(path)
        >>> log.write({"step": 1, "loss": 2.5})
        >>> read_log(path)[0]["loss"]
        2.5
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        kept = [row for row in read_log(self.path) if resume_step is not None and row["step"] <= resume_step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows({k: _cell(row.get(k)) for k in LOG_COLUMNS} for row in kept)

    def write(self, row: Mapping[str, float | int | None]) -> None:
        """Append one row (missing columns stay empty); flushed at once, so a killed run keeps it."""
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writerow({k: _cell(row.get(k)) for k in LOG_COLUMNS})


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(value, 6) if isinstance(value, float) else value


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a training log as numbers (empty cells left out); [] when there is no file."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def plot_log(path: str | Path, out: str | Path) -> Path:
    """Draw the loss, the temperature and the validation metrics of a log as one PNG.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> log = CsvLog(folder / "log.csv")
        >>> for step in (1, 2):
        ...     log.write({"step": step, "loss": 3.0 / step, "i2t_r1": 0.1 * step})
        >>> plot_log(folder / "log.csv", folder / "curves.png").stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(path)
    panels = [
        ("training loss", ["loss"]),
        ("scale = exp(logit_scale)", ["scale"]),
        ("validation", ["zero_shot_acc", "i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5"]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for axis, (title, columns) in zip(axes, panels):
        for column in columns:
            points = [(row["step"], row[column]) for row in rows if column in row and "step" in row]
            if points:
                axis.plot(*zip(*points), marker="." if len(points) < 50 else None, label=column)
        axis.set_title(title)
        axis.set_xlabel("step")
        if axis.has_data() and len(columns) > 1:
            axis.legend(fontsize="small")
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
