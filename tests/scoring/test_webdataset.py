"""WebDataset shards: samples listed from tar headers with their captions, streamed and decoded in order,
pixels equal to decoding the same file with Pillow; broken samples are error strings, not crashes."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from sdclip.errors import ImageInputError
from sdclip.scoring.webdataset import decoded_chunks, read_webdataset, split_ref, tar_paths


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png(seed, size=(12, 9)):
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def shards(tmp_path):
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        add(tar, "0001.png", png(1))
        add(tar, "0001.txt", b"a red cat\n")
        add(tar, "0002.jpg", b"not a jpeg")
        add(tar, "0002.json", json.dumps({"caption": "a broken dog", "width": 3}).encode())
        add(tar, "0003.png", png(3))  # no caption
        add(tar, "0003.cls", b"7")
    with tarfile.open(tmp_path / "00001.tar", "w") as tar:
        add(tar, "0004.json", json.dumps({"prompt": "from json"}).encode())
        add(tar, "0004.png", png(4))  # caption member before the image
    return tmp_path


def test_samples_are_listed_in_shard_then_member_order_with_captions(shards):
    samples = read_webdataset(tar_paths([shards]))
    assert [(ref.split("/")[-2:], caption) for ref, caption in samples] == [
        (["00000.tar", "0001.png"], "a red cat"), (["00000.tar", "0002.jpg"], "a broken dog"),
        (["00000.tar", "0003.png"], ""), (["00001.tar", "0004.png"], "from json")]
    assert split_ref(samples[3][0]) == (str(shards / "00001.tar"), "0004.png")


@pytest.mark.parametrize("chunk", [1, 2, 3, 10])
def test_chunks_come_in_order_with_pixels_equal_to_pillow(shards, chunk):
    samples = read_webdataset(tar_paths([shards]))
    refs = [ref for ref, _ in samples]
    got = [(start, image) for start, images in decoded_chunks(refs, chunk=chunk) for image in images]
    assert [start for start, _ in got] == [k // chunk * chunk for k in range(len(refs))]
    images = [image for _, image in got]
    for index, seed in [(0, 1), (2, 3), (3, 4)]:
        reference = np.asarray(Image.open(io.BytesIO(png(seed))).convert("RGB"))
        assert np.array_equal(np.asarray(images[index].convert("RGB")), reference)
    assert images[1] == f"image '{refs[1]}': not an image file Pillow can read (UnidentifiedImageError)"


def test_a_sample_missing_from_its_shard_is_an_error_in_place(shards):
    refs = [f"{shards}/00000.tar/0001.png", f"{shards}/00000.tar/9999.png", f"{shards}/00001.tar/0004.png"]
    images = [image for _, chunk in decoded_chunks(refs, chunk=2) for image in chunk]
    assert images[1] == f"image '{refs[1]}': no such member in {shards}/00000.tar"
    assert images[0].size == (9, 12) and images[2].size == (9, 12)


def test_bad_shards_are_one_line_errors(tmp_path):
    with pytest.raises(ImageInputError, match=r"--webdataset '.*nope.tar': no such file"):
        read_webdataset([str(tmp_path / "nope.tar")])
    (tmp_path / "bad.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ImageInputError, match=r"--webdataset '.*bad.tar': not a readable tar file"):
        read_webdataset([str(tmp_path / "bad.tar")])
    with pytest.raises(ImageInputError, match=r"--webdataset '.*x.zip': expected a .tar shard as img2dataset writes"):
        read_webdataset([str(tmp_path / "x.zip")])
