"""Hub file references (``hf://owner/name[@revision]/path``): parsing, the local/hub decision, and resolution
through ``huggingface_hub.hf_hub_download`` in a real cache layout (blobs, snapshots, refs) built here, offline."""

from __future__ import annotations

import httpx2
import pytest

from sdclip.errors import ModelSourceError, WeightsNotAvailableError
from sdclip.models import hub_files
from sdclip.models.hub_files import HubFile, download_hub_file, parse_hub_file
from sdclip.testing import put_in_hub_cache as put_in_cache


@pytest.mark.parametrize("reference, expected", [
    ("hf://xswu/HPSv2/HPS_v2.1_compressed.pt", HubFile("xswu/HPSv2", "HPS_v2.1_compressed.pt")),
    ("camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth",
     HubFile("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth")),
    ("hf://owner/name@v1.0/heads/l14/head.safetensors", HubFile("owner/name", "heads/l14/head.safetensors", "v1.0")),
    ("owner/name@0123abc/head.pth", HubFile("owner/name", "head.pth", "0123abc")),
])  # fmt: skip
def test_hub_references_parse(reference, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hub_file(reference) == expected
    assert str(expected) == ("hf://" + reference).replace("hf://hf://", "hf://")


def test_local_paths_stay_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "head.pth").write_bytes(b"")
    assert parse_hub_file("a/b/head.pth") is None  # an existing file
    assert parse_hub_file("weights/sub/missing.pth") is None  # under a local folder: a missing local file
    assert parse_hub_file("head.pth") is None and parse_hub_file("weights/head.pth") is None  # no repo id
    assert parse_hub_file(tmp_path / "owner" / "name" / "head.pth") is None  # Path objects are local
    assert parse_hub_file("/abs/owner/name/head.pth") is None and parse_hub_file("./o/n/head.pth") is None


@pytest.mark.parametrize("reference", [
    "hf://owner/head.pth", "hf://datasets/owner/name/file.pth", "hf://owner/name/../secret.pth", "hf://owner/name/",
])  # fmt: skip
def test_malformed_hf_references_are_one_line_errors(reference):
    with pytest.raises(ModelSourceError, match=rf"^weights '{reference}': expected hf://owner/name/path/in/repo "
                       r"\(or hf://owner/name@revision/path\), a file in a hub model repository$"):
        parse_hub_file(reference)


def test_a_cached_file_resolves_offline_by_branch_and_by_tag(hub_cache):
    link = put_in_cache(hub_cache, "owner/name", "heads/head.pth", b"main")
    tagged = put_in_cache(hub_cache, "owner/name", "heads/head.pth", b"tagged", ref="v1", commit="b" * 40)
    assert download_hub_file(HubFile("owner/name", "heads/head.pth")) == link
    assert download_hub_file(HubFile("owner/name", "heads/head.pth", "v1")).read_bytes() == b"tagged" == \
        tagged.read_bytes()


@pytest.mark.parametrize("forced, why", [
    (True, r"offline mode \(HF_HUB_OFFLINE / local_files_only\)"), (False, "the hub cannot be reached")])
def test_a_file_not_in_the_cache_says_how_to_get_it(hub_cache, monkeypatch, forced, why):
    put_in_cache(hub_cache, "owner/name", "other.pth", b"x")  # the repository is cached, this file is not
    if not forced:
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(hub_files, "hub_reachable", lambda: False)
    with pytest.raises(WeightsNotAvailableError, match=(
        rf"^'hf://owner/name@v2/head\.pth': not in the local Hugging Face cache, and {why}; on a machine with "
        r"network run `hf download owner/name head\.pth --revision v2` \(or pass the downloaded file's path\)$"
    )):
        download_hub_file(HubFile("owner/name", "head.pth", "v2"), local_files_only=True if forced else None)


def _http_error(cls, status):
    url = "https://huggingface.co/owner/name/resolve/main/head.pth"
    return cls("hub answer", response=httpx2.Response(status, request=httpx2.Request("GET", url)))


@pytest.mark.parametrize("error, message", [
    ("RepositoryNotFoundError", r"no hub repository 'owner/name' \(or it is private or gated: log in with "),
    ("RevisionNotFoundError", r"hub repository 'owner/name' has no revision 'main'"),
    ("RemoteEntryNotFoundError", r"hub repository 'owner/name' has no file 'head\.pth'$"),
])  # fmt: skip
def test_what_the_hub_answers_is_one_line(monkeypatch, error, message):
    """The hub's own exceptions (as hf_hub_download raises them online) map to sdclip's one-line errors."""
    import huggingface_hub
    import huggingface_hub.errors as hub_errors

    monkeypatch.setattr(hub_files, "hub_reachable", lambda: True)
    raised = _http_error(getattr(hub_errors, error), 404)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: (_ for _ in ()).throw(raised))
    with pytest.raises(ModelSourceError, match=rf"^'hf://owner/name/head\.pth': {message}"):
        download_hub_file(HubFile("owner/name", "head.pth"), local_files_only=False)
