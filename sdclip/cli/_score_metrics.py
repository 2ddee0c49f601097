"""``sdclip score``'s several-metric options (``--metric``, ``--rank-by``, ``--weights``, ``--report``).

``cli/score.py`` calls these few functions; the metrics are ``scoring.multi.MultiScorer``, the file format
``scoring.score_files`` (one column per metric), the summary ``scoring.metric_summary``. With ``--metric
clip`` alone (the default) nothing changes: the scorer, rows and file are the single-metric ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SdclipError
from ..scoring.score_files import ScoreRow
from ._common import shown, stdout


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--metric``, ``--rank-by``, ``--weights`` and ``--report`` to ``sdclip score``."""
    parser.add_argument("--metric", default="clip", metavar="NAMES",
                        help="comma-separated metrics, one column each: clip, aesthetic, pickscore, hpsv2 "
                        "(default: clip); all are computed in one pass over the images")
    parser.add_argument("--rank-by", default=None, metavar="NAME",
                        help="the metric that fills the score column and ranks each prompt's images "
                        "(default: the first of --metric)")
    parser.add_argument("--weights", action="append", default=[], metavar="METRIC=SOURCE",
                        help="a metric's weights: a local file or a hub file hf://owner/name/path (aesthetic, "
                        "hpsv2; default: the published file on the hub, e.g. "
                        "aesthetic=hf://camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth, "
                        "hpsv2=hf://xswu/HPSv2/HPS_v2.1_compressed.pt with --allow-pickle), "
                        "pickscore=yuvalkirstain/PickScore_v1 (a hub id or folder); "
                        "clip and aesthetic's backbone are --model")
    parser.add_argument("--report", metavar="FILE.html", default=None,
                        help="also write the HTML report of the rows (see `sdclip report`)")


@dataclasses.dataclass(frozen=True)
class MetricPlan:
    """What to compute: metric names (column order), the rank-by metric and each metric's source."""

    metrics: tuple[str, ...]
    rank_by: str
    sources: dict[str, Any]

    @property
    def multi(self) -> bool:
        """False for the single-metric clip run (today's file format and scorer)."""
        return self.metrics != ("clip",)

    @property
    def columns(self) -> tuple[str, ...]:
        """The file's metric columns (none for the single-metric run)."""
        return self.metrics if self.multi else ()


def metric_plan(args: argparse.Namespace) -> MetricPlan:
    """Check ``--metric``, ``--rank-by`` and ``--weights`` against the registry, before any model loads."""
    from ..scoring.registry import available_scorers

    known = available_scorers()
    given = getattr(args, "metric", "clip")  # a Namespace built without these options: the clip run
    metrics = tuple(dict.fromkeys(name.strip() for name in str(given).split(",") if name.strip()))
    if not metrics:
        raise SdclipError(f"--metric: expected comma-separated metric names ({', '.join(known)}), got {given!r}")
    for name in metrics:
        if name not in known:
            raise SdclipError(f"--metric: unknown metric '{name}'; available: {', '.join(known)}")
    rank_by = getattr(args, "rank_by", None) or metrics[0]
    if rank_by not in metrics:
        raise SdclipError(f"--rank-by: '{rank_by}' is not one of --metric ({', '.join(metrics)}); add it to --metric")
    sources: dict[str, Any] = {"clip": args.model}
    for item in getattr(args, "weights", None) or []:
        name, sep, source = item.partition("=")
        if not sep or not source or name not in metrics:
            raise SdclipError(f"--weights: expected METRIC=SOURCE with METRIC one of --metric ({', '.join(metrics)}), "
                              f"got {item!r}")
        if name == "clip":
            raise SdclipError("--weights: clip's weights are --model")
        sources[name] = source
    return MetricPlan(metrics, rank_by, sources)


def load_multi(args: argparse.Namespace, plan: MetricPlan) -> Any:
    """The ``MultiScorer`` of ``plan``, with ``sdclip score``'s loading options."""
    from ..scoring.multi import MultiScorer

    options = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
               "preprocessing": args.preprocessing, "allow_pickle": args.allow_pickle, "workers": args.workers,
               "gpu_decode": args.gpu_decode, "local_files_only": True if args.offline else None}
    if args.exif_transpose:
        options["exif_transpose"] = True
    return MultiScorer.from_pretrained(plan.metrics, sources=plan.sources, **options)


def batch_rows(plan: MetricPlan, batch: Any, pairs: Sequence[tuple[str, str]]) -> list[ScoreRow]:
    """The rows of one ``MultiScoredBatch``: each metric's column, ``score`` = the rank-by metric."""
    rows = []
    columns = {name: batch.scores[name].tolist() for name in plan.metrics}
    for offset, error in enumerate(batch.errors):
        image, prompt = pairs[batch.start + offset]
        values = [(name, columns[name][offset]) for name in plan.metrics]
        nan = [name for name, value in values if math.isnan(value)]
        if error is None and not nan:
            metrics = tuple((name, round(value, 6)) for name, value in values)
            rows.append(ScoreRow(image, prompt, dict(metrics)[plan.rank_by], None, "", metrics))
        else:
            message = error or f"score is NaN ({', '.join(nan)})"
            rows.append(ScoreRow(image, prompt, None, None, message, tuple((name, None) for name in plan.metrics)))
    return rows


def resumed_row(plan: MetricPlan, row: ScoreRow) -> ScoreRow | None:
    """A row read back for ``--resume`` as this run writes it, or None when it must be scored again
    (it failed, or lacks one of the metrics asked for)."""
    if row.error or row.score is None:
        return None
    if not plan.multi:
        return None if row.metrics and row.metric("clip") is None else dataclasses.replace(
            row, score=row.metric("clip") if row.metrics else row.score, metrics=())
    values = dict(row.metrics)
    if not row.metrics and plan.metrics == ("clip",):
        values = {"clip": row.score}
    if any(values.get(name) is None for name in plan.metrics):
        return None
    metrics = tuple((name, values[name]) for name in plan.metrics)
    return dataclasses.replace(row, score=values[plan.rank_by], rank=None, metrics=metrics)


def print_metric_summary(plan: MetricPlan, rows: list[ScoreRow], out: Path | None) -> None:
    """Each metric's mean per prompt and overall, and the best image by the rank-by metric."""
    from rich.table import Table

    from ..scoring.metric_summary import summarize_metrics

    table = Table(title="summary" + (f" (rows in {shown(str(out))}, ranked by {plan.rank_by})" if out else
                                     f" (ranked by {plan.rank_by})"))
    table.add_column("prompt")
    for column in ("images", "failed", *(f"mean {name}" for name in plan.metrics)):
        table.add_column(column, justify="right")
    table.add_column("best image")
    for summary in summarize_metrics(rows, plan.metrics):
        means = ["" if mean is None else f"{mean:.4f}" for _, mean in summary.means]
        table.add_row("(all prompts)" if summary.prompt is None else shown(summary.prompt), str(summary.images),
                      str(summary.failed), *means, shown(summary.best_image or ""))
    stdout().print(table)


def write_report_option(args: argparse.Namespace, rows: list[ScoreRow], out: Path | None) -> None:
    """``--report FILE.html``: the report of this run's rows (images linked relative to the report)."""
    if not getattr(args, "report", None):
        return
    from ..report import write_report

    path = write_report(rows, args.report, source=str(out) if out else None)
    stdout().print(f"report: {shown(str(path))}")
