"""``sdclip demo``: a tour of sdclip on the small trained model it ships (``sdclip:shapes``), fully offline.

Draws a few shape images, ranks them against prompts, classifies them zero-shot, encodes the prompts as
a diffusers pipeline would take them, prints each result as a table and writes images, CSV score files
(``scores.csv`` is the file ``sdclip score`` writes), embeddings, plots and the HTML report to ``--out``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..models.sources import DEMO_MODEL

# what the demo draws: (shape, colour, size, position); each prompt below has a best match among them
SCENE = [
    ("circle", "red", "small", "left"), ("star", "blue", "large", "right"), ("triangle", "green", "medium", "middle"),
    ("square", "yellow", "large", "left"), ("hexagon", "purple", "small", "right"), ("cross", "orange", "medium", "middle"),
    ("star", "red", "large", "middle"), ("circle", "white", "medium", "right"),
]  # fmt: skip
PROMPTS = ["a red circle", "a blue star", "a yellow square on the left", "a red star", "a small purple hexagon"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="rank, classify and encode on the small trained model that ships with sdclip (offline)",
        description=f"A tour on {DEMO_MODEL}, a small CLIP model trained on captioned shapes that ships with "
        "sdclip: no download, no weights needed. Draws images, ranks them against prompts, classifies them "
        "zero-shot and encodes prompts; prints tables and writes files to --out.",
    )  # fmt: skip
    parser.add_argument("--out", default="sdclip-demo", metavar="DIR", help="output folder (default: sdclip-demo)")
    parser.add_argument("--seed", type=int, default=0, help="jitter of the drawn images (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.set_defaults(run=run)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..datasets.shapes import ShapeAttributes, class_prompts, draw, full_caption
    from ..scoring.clip_scorer import ClipScorer
    from ._common import output_folder, stderr

    out = output_folder(args.out)
    (out / "images").mkdir(exist_ok=True)
    scorer = ClipScorer.from_pretrained(DEMO_MODEL, device=args.device, local_files_only=True)
    size = int(scorer.model.config.vision_config.image_size)  # draw at the size the model was trained on
    scene = [ShapeAttributes(*item) for item in SCENE]
    paths = []
    for index, attributes in enumerate(scene):
        pixels = draw(attributes, rng=np.random.default_rng([args.seed, index]), image_size=size)
        path = out / "images" / f"{index + 1:02d}_{_slug(full_caption(attributes))}.png"
        _save_image(pixels, path)
        paths.append(path)
    stderr().print(f"drew {len(paths)} images ({size} x {size} px) in {out / 'images'}")
    _rank(scorer, out, paths)
    _classify(scorer, out, paths, scene, class_prompts())
    _encode(args, out)
    stderr().print(f"[bold]done[/bold]: everything is in {out}")
    return 0


def _save_image(pixels, path: Path) -> None:
    from PIL import Image

    from ._common import atomic_write

    atomic_write(path, lambda file: Image.fromarray(pixels, "RGB").save(file, format="PNG"), binary=True)


def _rank(scorer, out: Path, paths: list[Path]) -> None:
    from rich.table import Table

    from .. import plots
    from ..report import write_report
    from ..scoring.score_files import ScoreRow, write_rows
    from ._common import atomic_write, save_png, stdout

    scores = scorer.similarity([str(p) for p in paths], PROMPTS)  # (images, prompts), 100 * cos
    table = Table(title=f"images ranked against prompts ({DEMO_MODEL}, CLIP score = 100 * cos)")
    for column in ("prompt", "best image", "score", "runner-up", "score "):
        table.add_column(column)
    rows = []
    for j, prompt in enumerate(PROMPTS):
        order = scores[:, j].argsort(descending=True).tolist()
        prompt_rows = [ScoreRow(str(paths[i].relative_to(out)), prompt, float(scores[i, j]), rank + 1)
                       for rank, i in enumerate(order)]  # fmt: skip
        rows += prompt_rows
        best, second = prompt_rows[0], prompt_rows[1]
        table.add_row(prompt, Path(best.image).name, f"{best.score:.1f}", Path(second.image).name, f"{second.score:.1f}")
        save_png(plots.plot_ranked_grid(prompt_rows, images_root=out, top=4, columns=4, thumbnail=96),
                 out / f"ranked_{_slug(prompt)}.png")  # fmt: skip
    atomic_write(out / "scores.csv", lambda file: write_rows(file, rows, ".csv"), encoding="utf-8")
    write_report(rows, out / "report.html", images_root=out, title=f"sdclip demo ({DEMO_MODEL})")
    stdout().print(table)


def _classify(scorer, out: Path, paths: list[Path], scene, labels: dict) -> None:
    from rich.table import Table

    from ._common import atomic_write, stdout

    keys, prompts = list(labels), list(labels.values())
    probabilities = scorer.classify([str(p) for p in paths], prompts)  # (images, classes)
    table = Table(title=f"zero-shot classification among {len(prompts)} colour + shape prompts")
    for column in ("image", "truth", "predicted", "probability"):
        table.add_column(column)
    lines, correct = ["image,truth,predicted,probability\n"], 0
    for path, attributes, row in zip(paths, scene, probabilities):
        best = int(row.argmax())
        truth, predicted = labels[(attributes.color, attributes.shape)], prompts[best]
        correct += truth == predicted
        mark = "" if truth == predicted else " [red](wrong)[/red]"
        table.add_row(path.name, truth, predicted + mark, f"{float(row[best]):.2f}")
        lines.append(f"{path.relative_to(out)},{truth},{predicted},{float(row[best]):.6f}\n")
    table.caption = f"{correct} of {len(paths)} right"
    atomic_write(out / "classification.csv", lambda file: file.write("".join(lines)), encoding="utf-8")
    stdout().print(table)


def _encode(args: argparse.Namespace, out: Path) -> None:
    from rich.table import Table
    from safetensors.torch import save

    from .. import plots
    from ..conditioning.conditioner import TextConditioner
    from ..inspection.api import similarity_matrix
    from ._common import atomic_write, save_png, stdout

    cond = TextConditioner.from_pretrained(DEMO_MODEL, device=args.device, local_files_only=True)
    result = cond.encode(PROMPTS)
    tensors = {name: getattr(result, name).contiguous().cpu() for name in ("prompt_embeds", "pooled_prompt_embeds")}
    atomic_write(out / "prompt_embeds.safetensors", lambda file: file.write(save(tensors)), binary=True)
    table = Table(title="prompts encoded as a diffusers pipeline takes them (prompt_embeds.safetensors)")
    for column in ("tensor", "shape", "dtype"):
        table.add_column(column)
    for name, tensor in tensors.items():
        table.add_row(name, str(tuple(tensor.shape)), str(tensor.dtype).removeprefix("torch."))
    stdout().print(table)
    matrix = similarity_matrix(cond, PROMPTS)
    stdout().print(matrix)
    save_png(plots.plot_similarity(matrix), out / "prompt_similarity.png")
