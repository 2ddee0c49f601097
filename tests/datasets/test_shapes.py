"""The shapes generator: seeded and order-free, draws what its captions say, fast, resumable on disk."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from sdclip.datasets.shapes import (
    COLORS, DEFAULT_COLORS, DEFAULT_SHAPES, SIZES, STYLES, ShapeAttributes, ShapeOptionError, class_prompts, draw,
    full_caption, generate_shapes, make_caption, shape_sample, write_shapes,
)  # fmt: skip


def _mask(pixels: np.ndarray, color: str) -> np.ndarray:
    """Pixels of the shape: those equal to the image's pixel nearest the named colour (shapes are flat)."""
    flat = pixels.reshape(-1, 3).astype(int)
    nearest = flat[np.abs(flat - np.array(COLORS[color])).sum(1).argmin()]
    return (pixels == nearest).all(-1)


def test_same_seed_same_samples_in_any_order():
    forward = [s.pixels for s in generate_shapes(20, seed=7)]
    backward = [shape_sample(i, seed=7).pixels for i in reversed(range(20))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))
    other = [s.pixels for s in generate_shapes(20, seed=8)]
    assert not any(np.array_equal(a, b) for a, b in zip(forward, other))


def test_attributes_are_spread_over_the_tables():
    samples = list(generate_shapes(600, seed=0))
    for name, table in (("shape", DEFAULT_SHAPES), ("color", DEFAULT_COLORS), ("size", list(SIZES))):
        counts = {value: sum(getattr(s.attributes, name) == value for s in samples) for value in table}
        expected = len(samples) / len(table)
        assert all(0.6 * expected < n < 1.4 * expected for n in counts.values()), (name, counts)


def test_caption_names_the_drawn_attributes():
    for sample in generate_shapes(200, seed=1):
        a = sample.attributes
        assert f"{a.color} {a.shape}" in sample.caption
        words = sample.caption.split()
        assert a.size in words or not set(SIZES) & set(words)  # a size word, when said, is the true one
        for position, word in (("left", "left"), ("middle", "middle"), ("right", "right")):
            assert word not in words or a.position == position  # a position, when said, is the true one


@pytest.mark.parametrize("color", DEFAULT_COLORS)
def test_shape_pixels_carry_the_caption_colour(color):
    pixels = draw(ShapeAttributes("circle", color, "large", "middle"), rng=np.random.default_rng(0))
    mask = _mask(pixels, color)
    shape_rgb = pixels[mask][0].astype(int)
    assert np.abs(shape_rgb - np.array(COLORS[color])).max() <= 12
    nearest = min(COLORS, key=lambda name: np.abs(np.array(COLORS[name]) - shape_rgb).sum())
    assert nearest == color


def test_positions_and_sizes_are_where_and_how_big_they_say():
    rng = np.random.default_rng(0)
    for shape in DEFAULT_SHAPES:
        centres, areas = {}, {}
        for position in ("left", "middle", "right"):
            mask = _mask(draw(ShapeAttributes(shape, "red", "small", position), rng=rng), "red")
            centres[position] = np.nonzero(mask)[1].mean() / mask.shape[1]
        for size in SIZES:
            areas[size] = _mask(draw(ShapeAttributes(shape, "blue", size, "middle"), rng=rng), "blue").mean()
        assert centres["left"] < 0.4 < centres["middle"] < 0.6 < centres["right"], (shape, centres)
        assert areas["small"] < areas["medium"] < areas["large"], (shape, areas)


@pytest.mark.parametrize(("shape", "low", "high"), [("square", 0.95, 1.0), ("circle", 0.72, 0.84),
                                                    ("triangle", 0.40, 0.60), ("hexagon", 0.68, 0.82)])  # fmt: skip
def test_shapes_fill_their_bounding_box_as_geometry_says(shape, low, high):
    """Square 1, circle pi/4, triangle 1/2, regular hexagon 3/4 of the bounding box (pixelised)."""
    mask = _mask(draw(ShapeAttributes(shape, "green", "large", "middle"), rng=np.random.default_rng(3)), "green")
    rows, cols = np.nonzero(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert low <= mask.sum() / box <= high


def test_triangle_points_up_and_outlined_shapes_are_hollow():
    mask = _mask(draw(ShapeAttributes("triangle", "red", "large", "middle"), rng=np.random.default_rng(0)), "red")
    rows = np.nonzero(mask.any(1))[0]
    assert mask[rows[0]].sum() < mask[rows[-1]].sum()  # narrow top row, wide bottom row
    filled = _mask(draw(ShapeAttributes("square", "red", "large", "middle"), rng=np.random.default_rng(0)), "red")
    hollow = _mask(draw(ShapeAttributes("square", "red", "large", "middle", "outlined"), rng=np.random.default_rng(0)), "red")
    rows, cols = np.nonzero(filled)
    centre = (int(rows.mean()), int(cols.mean()))
    assert filled[centre] and not hollow[centre] and hollow.sum() < filled.sum()


def test_captions_templates_and_prompts():
    attrs = ShapeAttributes("star", "yellow", "medium", "right", "outlined")
    assert full_caption(attrs) == "a medium outlined yellow star on the right"
    assert make_caption(attrs, template=2) == "a outlined yellow star"
    prompts = class_prompts(shapes=("star", "heart"), colors=("brown",))
    assert prompts == {("brown", "star"): "a brown star", ("brown", "heart"): "a brown heart"}
    assert {s.attributes.style for s in generate_shapes(40, seed=0, styles=STYLES)} == set(STYLES)


def test_thousands_of_images_per_second():
    list(generate_shapes(50, seed=0))  # warm-up
    start = time.process_time()  # CPU time: a busy machine must not fail it
    list(generate_shapes(1000, seed=0))
    rate = 1000 / (time.process_time() - start)
    assert rate > 500  # ~3,000/s of one core of the 2-core dev machine; slack for CI


def test_write_shapes_resumes_without_rewriting(tmp_path):
    folder = write_shapes(tmp_path / "data", 3, seed=0)
    first = (folder / "000001.png").stat().st_mtime_ns
    (folder / "000002.png").unlink()
    write_shapes(folder, 4, seed=0)
    assert (folder / "000001.png").stat().st_mtime_ns == first
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [row["file"] for row in rows] == ["000000.png", "000001.png", "000002.png", "000003.png"]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(folder / "000002.png")), shape_sample(2, seed=0).pixels)
    assert (folder / "000003.txt").read_text().strip() == shape_sample(3, seed=0).caption == rows[3]["caption"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: shape_sample(0, shapes=("circle", "blob")), r"shapes \['blob'\]: expected one or more of circle, square"),
    (lambda: shape_sample(0, colors=()), r"colors \(\): expected one or more of red, orange"),
    (lambda: shape_sample(0, image_size=20), r"image_size 20: expected a multiple of 8, at least 16"),
    (lambda: make_caption(ShapeAttributes("star", "red", "small", "left"), template=9), r"template 9: expected an index from 0 to 5"),
    (lambda: list(generate_shapes(-1)), r"count -1, start 0: expected numbers >= 0"),
])  # fmt: skip
def test_errors_say_what_was_expected(call, message):
    with pytest.raises(ShapeOptionError, match=message):
        call()


def test_changes_redraw_the_same_scene_with_another_attribute():
    for index in range(40):
        sample = shape_sample(index, seed=3)
        other = "hexagon" if sample.attributes.shape != "hexagon" else "circle"
        twin = shape_sample(index, seed=3, changes={"shape": other})
        assert twin.attributes == ShapeAttributes(other, *[getattr(sample.attributes, k) for k in
                                                           ("color", "size", "position", "style")])  # fmt: skip
        assert twin.caption == sample.caption.replace(sample.attributes.shape, other)
        assert twin.template == sample.template
        inside = _mask(sample.pixels, sample.attributes.color) | _mask(twin.pixels, twin.attributes.color)
        assert np.array_equal(sample.pixels[~inside], twin.pixels[~inside])  # same background, nothing else moved
        assert not np.array_equal(sample.pixels, twin.pixels)
    red = shape_sample(0, seed=3, changes={"color": "red"})
    assert red.attributes.color == "red" and _mask(red.pixels, "red").sum() > 20


@pytest.mark.parametrize(("changes", "message"), [
    ({"shape": "blob"}, r"changes shape='blob': expected one of circle, square, triangle"),
    ({"texture": "wood"}, r"changes texture='wood': expected an attribute among shape, color, size, position, style"),
])  # fmt: skip
def test_changes_are_checked(changes, message):
    with pytest.raises(ShapeOptionError, match=message):
        shape_sample(0, changes=changes)
