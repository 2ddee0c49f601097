"""Rows of ``sdclip score`` batch by batch: from image files through the scorer's pipeline, or streamed
from WebDataset tars (``scoring.webdataset``). Used by the single-process run and by each sharded process."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..scoring.score_files import ScoreRow
from ._score_metrics import MetricPlan, batch_rows


def row_batches(scorer, pairs: list[tuple[str, str]], plan: MetricPlan | None = None):  # noqa: ANN001, ANN202
    """Each batch's rows (in ``pairs`` order), with a progress bar on stderr.

    Files stream through the scorer's own pipeline; WebDataset samples are read from their tars and
    decoded in chunks (``scoring.webdataset``), a sample that does not decode is an error row in its place.
    With a multi-metric ``plan`` (``scorer`` a ``MultiScorer``) rows carry one column per metric.
    """
    from tqdm import tqdm

    from ..scoring.webdataset import decoded_chunks, is_tar_ref

    multi = plan is not None and plan.multi

    def row(k: int, score: float | None, error: str | None) -> ScoreRow:
        ok = error is None and score is not None and not math.isnan(score)
        if multi and not ok:  # an image that did not decode: every metric empty
            return ScoreRow(*pairs[k], None, None, error or "score is NaN", tuple((m, None) for m in plan.metrics))
        return ScoreRow(*pairs[k], round(score, 6) if ok else None, None, "" if ok else (error or "score is NaN"))

    if pairs and is_tar_ref(pairs[0][0]):
        chunks = decoded_chunks([image for image, _ in pairs], workers=scorer.workers, chunk=4 * scorer.batch_size)
    else:
        chunks = iter([(0, [Path(image) for image, _ in pairs])])
    with tqdm(total=len(pairs), unit="img", desc="sdclip score", file=sys.stderr) as progress:
        for offset, images in chunks:
            good = [k for k, image in enumerate(images) if not isinstance(image, str)]
            emitted = 0  # rows of this chunk handed out so far
            batches = scorer.iter_scores([images[k] for k in good], [pairs[offset + k][1] for k in good],
                                         errors="return") if good else ()
            for batch in batches:
                new = []
                made = batch_rows(plan, batch, [pairs[offset + k] for k in good]) if multi else None
                for position, error in enumerate(batch.errors):
                    k = good[batch.start + position]
                    new += [row(offset + j, None, images[j]) for j in range(emitted, k)]  # failed decodes
                    new.append(made[position] if made is not None else
                               row(offset + k, batch.scores[position].item(), error))
                    emitted = k + 1
                progress.update(len(new))
                yield new
            if emitted < len(images):
                progress.update(len(images) - emitted)
                yield [row(offset + j, None, images[j]) for j in range(emitted, len(images))]
