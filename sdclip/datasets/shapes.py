"""A seeded generator of captioned images: coloured shapes of a few sizes and positions on varied backgrounds.

Every sample is a pure function of ``(seed, index)``, so a data set is reproducible bit for bit, can be
drawn in any order or in pieces, and a held-out set is simply another seed. Images are drawn with numpy
straight into small arrays (thousands per second); captions come from several templates, each naming
some of the sample's attributes ("a small red circle on the left", "a photo of a blue star").

The attribute tables are data: ``SHAPES``, ``COLORS``, ``SIZES``, ``POSITIONS`` and ``STYLES``. The
demo model was trained on the defaults (filled shapes); ``"outlined"`` and the shapes outside
``DEFAULT_SHAPES`` exist to teach it something new (``notebooks/04_training.ipynb``).

Example:
    >>> sample = shape_sample(3, seed=0)
    >>> sample.image.size, sample.caption == make_caption(sample.attributes, template=sample.template)
    ((64, 64), True)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import SdclipError

if TYPE_CHECKING:
    from PIL import Image

# RGB of each colour; a sample's colour is jittered by up to +-_COLOR_JITTER per channel
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (245, 135, 20), "yellow": (240, 215, 35), "green": (35, 165, 60),
    "blue": (35, 75, 215), "purple": (135, 55, 185), "pink": (245, 125, 190), "white": (245, 245, 245),
    "brown": (125, 75, 30), "black": (20, 20, 20),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")
DEFAULT_SHAPES = SHAPES[:6]
DEFAULT_COLORS = tuple(list(COLORS)[:8])
SIZES: dict[str, tuple[float, float]] = {"small": (0.11, 0.15), "medium": (0.19, 0.23), "large": (0.28, 0.33)}
POSITIONS = {"left": -1, "middle": 0, "right": 1}
STYLES = ("filled", "outlined")
TEMPLATES = (
    "a {size} {style}{color} {shape} {where}",
    "a photo of a {style}{color} {shape}",
    "a {style}{color} {shape}",
    "a drawing of a {size} {style}{color} {shape}",
    "a {style}{color} {shape} {where}",
    "a {size} {style}{color} {shape}",
)
_WHERE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
_COLOR_JITTER = 12


class ShapeOptionError(SdclipError, ValueError):
    """An attribute value the shapes generator does not know, or a count or size out of range."""


@dataclass(frozen=True)
class ShapeAttributes:
    """What a sample shows: one shape, its colour, size, horizontal position and fill style."""

    shape: str
    color: str
    size: str
    position: str
    style: str = "filled"


@dataclass(frozen=True)
class ShapeSample:
    """One generated image, its caption and what it shows.

    Attributes:
        pixels: ``(H, W, 3)`` uint8 array.
        caption: the text paired with the image.
        attributes: the ground truth.
        template: index into ``TEMPLATES`` of the caption's form.
        index: the sample's index within its seed.
    """

    pixels: np.ndarray
    caption: str
    attributes: ShapeAttributes
    template: int
    index: int

    @property
    def image(self) -> Image.Image:
        """The pixels as a PIL RGB image."""
        from PIL import Image

        return Image.fromarray(self.pixels, "RGB")


def make_caption(attributes: ShapeAttributes, *, template: int = 0) -> str:
    """The caption of ``attributes`` in one of the ``TEMPLATES`` (``style`` is said only when outlined).

    Example:
        >>> make_caption(ShapeAttributes("circle", "red", "small", "left"))
        'a small red circle on the left'
        >>> make_caption(ShapeAttributes("star", "blue", "large", "right", "outlined"), template=1)
        'a photo of a outlined blue star'
    """
    if not 0 <= template < len(TEMPLATES):
        raise ShapeOptionError(f"template {template}: expected an index from 0 to {len(TEMPLATES) - 1}")
    style = "" if attributes.style == "filled" else attributes.style + " "
    return TEMPLATES[template].format(size=attributes.size, style=style, color=attributes.color,
                                      shape=attributes.shape, where=_WHERE[attributes.position])  # fmt: skip


def full_caption(attributes: ShapeAttributes) -> str:
    """The caption naming every attribute (template 0): what retrieval queries use.

    Example:
        >>> full_caption(ShapeAttributes("cross", "green", "medium", "middle"))
        'a medium green cross in the middle'
    """
    return make_caption(attributes, template=0)


def _check(name: str, values: tuple[str, ...], known: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    values = tuple(values)
    unknown = [v for v in values if v not in known]
    if not values or unknown:
        raise ShapeOptionError(
            f"{name} {list(unknown) if unknown else '()'}: expected one or more of {', '.join(known)}"
        )
    return values


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside ``shape`` of radius ``r`` centred at 0 (``dx``, ``dy``: offsets, y pointing down)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.82 * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.05 * r
    if shape == "triangle":  # apex up: vertices (0, -r), (+-0.87 r, 0.5 r)
        return (dy <= 0.5 * r) & (1.732 * dx - dy <= r) & (-1.732 * dx - dy <= r)
    if shape == "hexagon":
        ax, ay = np.abs(dx), np.abs(dy)
        return (ay <= 0.866 * r) & (0.866 * ax + 0.5 * ay <= 0.866 * r)
    if shape == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == "star":  # five points up; radius swings linearly between inner and outer
        rho = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dx, -dy)  # 0 at the top, clockwise
        phase = np.abs(((theta / (2 * np.pi / 5)) % 1.0) - 0.5) * 2  # 1 at a point, 0 between points
        return rho <= r * (0.42 + 0.58 * phase**1.5)
    if shape == "heart":
        x, y = dx / r, -dy / r + 0.25
        return (x * x + y * y - 0.6) ** 3 - x * x * y**3 <= 0
    raise ShapeOptionError(f"shape '{shape}': expected one of {', '.join(SHAPES)}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted background: flat, a linear gradient or coarse noise, so colour words name the shape only."""
    base = rng.uniform(70, 190) + rng.uniform(-18, 18, size=3)
    kind = rng.integers(3)
    if kind == 0:
        field = np.zeros((size, size, 1))
    elif kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * np.linspace(-1, 1, size)[None, :] + np.sin(angle) * np.linspace(-1, 1, size)[:, None]
        field = (ramp * rng.uniform(15, 40))[..., None]
    else:
        coarse = rng.normal(0, rng.uniform(8, 20), size=(size // 8, size // 8, 1))
        field = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)
    return np.clip(base + field, 0, 255)


def draw(attributes: ShapeAttributes, *, rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """Draw ``attributes`` as an ``(image_size, image_size, 3)`` uint8 array, jittered by ``rng``.

    Example:
        >>> pixels = draw(ShapeAttributes("square", "blue", "large", "right"), rng=np.random.default_rng(0))
        >>> pixels.shape, pixels.dtype.name
        ((64, 64, 3), 'uint8')
    """
    if attributes.style not in STYLES:
        raise ShapeOptionError(f"style '{attributes.style}': expected one of {', '.join(STYLES)}")
    low, high = SIZES[attributes.size]
    r = rng.uniform(low, high)  # fractions of the image side
    reach = 0.5 - r - 0.02
    cx = 0.5 + POSITIONS[attributes.position] * reach * rng.uniform(0.85, 1.0) + rng.uniform(-0.03, 0.03)
    cy = 0.5 + rng.uniform(-1, 1) * max(reach, 0.0) * 0.6
    coords = (np.arange(image_size) + 0.5) / image_size
    dx, dy = coords[None, :] - cx, coords[:, None] - cy
    mask = _shape_mask(attributes.shape, dx, dy, r)
    if attributes.style == "outlined":
        mask &= ~_shape_mask(attributes.shape, dx, dy, r * 0.62)
    pixels = _background(rng, image_size)
    color = np.clip(np.array(COLORS[attributes.color]) + rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, 3), 0, 255)
    pixels[mask] = color
    return pixels.astype(np.uint8)


def shape_sample(
    index: int,
    *,
    seed: int = 0,
    image_size: int = 64,
    shapes: tuple[str, ...] = DEFAULT_SHAPES,
    colors: tuple[str, ...] = DEFAULT_COLORS,
    styles: tuple[str, ...] = ("filled",),
    changes: dict[str, str] | None = None,
) -> ShapeSample:
    """Sample ``index`` of the data set ``seed``: attributes drawn uniformly from the given tables.

    ``changes`` replaces attributes after they are drawn, keeping everything else (size and place jitter,
    background, colour jitter, caption template): ``changes={"shape": "hexagon"}`` gives the same scene
    with a hexagon, a hard negative to train next to the original.

    Example:
        >>> shape_sample(0, seed=1).caption == shape_sample(0, seed=1).caption
        True
        >>> shape_sample(0, seed=1).caption, shape_sample(0, seed=1, changes={"shape": "hexagon"}).caption
        ('a large blue triangle on the right', 'a large blue hexagon on the right')
    """
    shapes, colors = _check("shapes", shapes, SHAPES), _check("colors", colors, list(COLORS))
    styles = _check("styles", styles, STYLES)
    if image_size < 16 or image_size % 8:
        raise ShapeOptionError(f"image_size {image_size}: expected a multiple of 8, at least 16")
    rng = np.random.default_rng([seed, index])
    attributes = ShapeAttributes(
        shape=shapes[rng.integers(len(shapes))], color=colors[rng.integers(len(colors))],
        size=list(SIZES)[rng.integers(len(SIZES))], position=list(POSITIONS)[rng.integers(len(POSITIONS))],
        style=styles[rng.integers(len(styles))],
    )  # fmt: skip
    template = int(rng.integers(len(TEMPLATES)))
    if changes:
        attributes = _changed(attributes, changes)
    pixels = draw(attributes, rng=rng, image_size=image_size)
    return ShapeSample(pixels, make_caption(attributes, template=template), attributes, template, index)


def _changed(attributes: ShapeAttributes, changes: dict[str, str]) -> ShapeAttributes:
    tables = {"shape": SHAPES, "color": list(COLORS), "size": list(SIZES), "position": list(POSITIONS),
              "style": STYLES}  # fmt: skip
    for name, value in changes.items():
        if name not in tables or value not in tables[name]:
            expected = (f"one of {', '.join(tables[name])}" if name in tables
                        else f"an attribute among {', '.join(tables)}")  # fmt: skip
            raise ShapeOptionError(f"changes {name}={value!r}: expected {expected}")
    return replace(attributes, **changes)


def generate_shapes(count: int, *, seed: int = 0, start: int = 0, **options) -> Iterator[ShapeSample]:
    """Samples ``start .. start + count - 1`` of data set ``seed`` (options as ``shape_sample``).

    Example:
        >>> [s.index for s in generate_shapes(3, seed=0, start=5)]
        [5, 6, 7]
    """
    if count < 0 or start < 0:
        raise ShapeOptionError(f"count {count}, start {start}: expected numbers >= 0")
    for index in range(start, start + count):
        yield shape_sample(index, seed=seed, **options)


def write_shapes(folder: str | Path, count: int, *, seed: int = 0, **options) -> Path:
    """Write ``count`` samples as ``NNNNNN.png`` + ``NNNNNN.txt`` caption pairs and a ``metadata.jsonl``.

    Samples already on disk are kept (a stopped run resumes where it stopped); ``metadata.jsonl``
    (file, caption and attributes per line) is rewritten at the end.

    Example:
        >>> import tempfile
        >>> folder = write_shapes(tempfile.mkdtemp(), 2, seed=0)
        >>> sorted(p.name for p in folder.iterdir())
        ['000000.png', '000000.txt', '000001.png', '000001.txt', 'metadata.jsonl']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in generate_shapes(count, seed=seed, **options):
        stem = folder / f"{sample.index:06d}"
        if not (stem.with_suffix(".png").is_file() and stem.with_suffix(".txt").is_file()):
            sample.image.save(stem.with_suffix(".png.tmp"), format="PNG")
            stem.with_suffix(".png.tmp").replace(stem.with_suffix(".png"))
            stem.with_suffix(".txt").write_text(sample.caption + "\n")
        rows.append({"file": stem.name + ".png", "caption": sample.caption, **asdict(sample.attributes)})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def class_prompts(
    *, shapes: tuple[str, ...] = DEFAULT_SHAPES, colors: tuple[str, ...] = DEFAULT_COLORS, template: str = "a {color} {shape}"
) -> dict[tuple[str, str], str]:
    """One prompt per (colour, shape) class, for zero-shot classification.

    Example:
        >>> prompts = class_prompts()
        >>> len(prompts), prompts[("red", "circle")]
        (48, 'a red circle')
    """
    shapes, colors = _check("shapes", shapes, SHAPES), _check("colors", colors, list(COLORS))
    return {(color, shape): template.format(color=color, shape=shape) for color in colors for shape in shapes}
