"""train.sources.git_import on a small git repository made in tmp_path: no network, no shared data."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from train.data.records import read_manifest
from train.sources import git_import as ig
from train.sources.fetch import SourceError
from train.sources.files import write_index
from train.sources.git_import import GitRule, GitSource
from train.sources.git_sources import GIT_SOURCES, comfy_workflow_model
from train.sources.gitread import (
    RESERVED_REPOS, check_commit, find_local, is_reserved_repo,
)
from train.sources.strip import has_metadata, strip_jpeg

REPO = "someone/gallery"


def noise(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def exif_bytes(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 9"  # Model
    exif[0x0131] = "Generator 3000"  # Software
    exif[0x0112] = orientation
    return exif.tobytes()


def jpeg_with_everything(img: Image.Image, orientation: int = 1) -> bytes:
    """A JPEG with EXIF, an ICC profile, a comment, a C2PA-like APP11 segment and a 'motion photo'
    appended after its end."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif_bytes(orientation), icc_profile=b"\0" * 128,
             comment=b"shot on a phone")
    data = buf.getvalue()
    payload = b"JP\0\0jumbc2pa manifest store"
    app11 = b"\xff\xeb" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + app11 + data[2:] + b"ftypmp42 appended video"


def png_with_workflow(img: Image.Image) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a photo of a cat, Steps: 20, Model: flux1-dev")
    info.add_text("prompt", json.dumps({"4": {"class_type": "CheckpointLoaderSimple",
                                              "inputs": {"ckpt_name": "flux1-dev.safetensors"}}}))
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>made by AI</x:xmpmeta>")
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info, exif=exif_bytes())
    return buf.getvalue()


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                           text=True, env=env).stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with one case per thing the importer must handle; returns (clone, commit)."""
    repo = tmp_path / "clones" / "someone+gallery"
    (repo / "ai").mkdir(parents=True)
    (repo / "photos").mkdir()
    (repo / "ai" / "cat.png").write_bytes(png_with_workflow(noise(200, 160, 1)))
    (repo / "ai" / "zz_same_cat.png").write_bytes(png_with_workflow(noise(200, 160, 1)))
    (repo / "ai" / "logo.png").write_bytes(png_with_workflow(noise(200, 200, 2)))
    noise(210, 150, 3).save(repo / "ai" / "render.webp", exif=exif_bytes(), lossless=True)
    (repo / "ai" / "big.png").write_text(  # a Git LFS pointer, not an image
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 12345\n")
    (repo / "photos" / "street.jpg").write_bytes(jpeg_with_everything(noise(240, 180, 4)))
    (repo / "photos" / "turned.jpg").write_bytes(jpeg_with_everything(noise(160, 120, 5), 6))
    noise(40, 40, 6).save(repo / "photos" / "thumb.jpg")
    (repo / "README.md").write_text("not an image")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "images")
    commit = git(repo, "rev-parse", "HEAD")
    # a later commit changes the work tree: the importer must read the pinned commit only
    noise(200, 160, 99).save(repo / "ai" / "cat.png")
    (repo / "photos" / "street.jpg").unlink()
    git(repo, "commit", "-q", "-am", "later")
    return repo, commit


def source(commit: str, **kw) -> GitSource:
    base = dict(name="toy-git", repo=REPO, commit=commit, licence="CC0-1.0",
                rules=(GitRule("ai/logo.png", "fake", "ai-gallery", "toy/gen-2", trim=(0, 0, 40, 0)),
                       GitRule("ai/*", "fake", "ai-gallery", "toy/gen-1"),
                       GitRule("photos/*", "real", "photo")))
    base.update(kw)
    return GitSource(**base)


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------


def test_import_reads_the_pinned_commit_and_strips_metadata(tmp_path):
    repo, commit = make_repo(tmp_path)
    stats = Counter()
    rows = ig.import_git(source(commit), repo, tmp_path / "out", stats)
    by = {r["orig"].split("#")[0]: r for r in rows}
    assert set(by) == {"ai/cat.png", "ai/logo.png", "ai/render.webp", "photos/street.jpg",
                       "photos/turned.jpg"}
    assert stats["lfs_pointer"] == 1 and stats["duplicate"] == 1 and stats["small"] == 1
    out = tmp_path / "out" / "toy-git"
    for r in rows:
        data = (out / r["path"]).read_bytes()
        assert has_metadata(data) == [], r["path"]
        for secret in (b"Exif", b"PhoneMaker", b"parameters", b"flux1-dev", b"xmpmeta", b"jumb",
                       b"shot on a phone", b"ftypmp42"):
            assert secret not in data, (r["path"], secret)
        assert r["source"] == f"{REPO}@{commit}" and r["split"] == "train"
    # the pinned commit's cat, not the later commit's
    cat = np.asarray(Image.open(out / by["ai/cat.png"]["path"]))
    assert np.array_equal(cat, np.asarray(noise(200, 160, 1)))
    # JPEG: metadata removed losslessly (same pixels as the original file decodes to)
    original = (repo / ".." / "street.jpg")
    original.write_bytes(git_show(repo, commit, "photos/street.jpg"))
    assert np.array_equal(np.asarray(Image.open(out / by["photos/street.jpg"]["path"])),
                          np.asarray(Image.open(original).convert("RGB")))
    assert stats["jpeg_stripped_lossless"] == 1
    # orientation 6: turned upright, then re-encoded
    turned = Image.open(out / by["photos/turned.jpg"]["path"])
    assert turned.size == (120, 160) and turned.format == "JPEG"
    # formats kept: PNG stays PNG, WebP stays WebP, JPEG stays JPEG
    assert by["ai/render.webp"]["path"].endswith(".webp")
    assert Image.open(out / by["ai/render.webp"]["path"]).format == "WEBP"
    assert by["ai/cat.png"]["path"].endswith(".png")


def git_show(repo: Path, commit: str, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


def test_labels_generators_groups_trim_and_provenance(tmp_path):
    repo, commit = make_repo(tmp_path)
    rows = ig.import_git(source(commit), repo, tmp_path / "out")
    by = {r["orig"].split("#")[0]: r for r in rows}
    assert by["ai/logo.png"]["generator"] == "toy/gen-2"  # the first matching rule wins
    assert by["ai/cat.png"]["generator"] == "toy/gen-1"
    assert by["photos/street.jpg"]["generator"] == ""
    assert by["ai/cat.png"]["group"] == "gen:toy/gen-1"
    assert by["photos/street.jpg"]["group"] == "real:toy-git"
    assert by["ai/logo.png"]["orig"] == "ai/logo.png#trim=0,0,200,160"
    assert (int(by["ai/logo.png"]["width"]), int(by["ai/logo.png"]["height"])) == (200, 160)
    # provenance names the repository and commit, never this machine
    manifest = (tmp_path / "out" / "toy-git" / "manifest.csv").read_text()
    stamp = (tmp_path / "out" / "toy-git" / "import.json").read_text()
    assert str(tmp_path) not in manifest and str(tmp_path) not in stamp
    samples = read_manifest(tmp_path / "out" / "toy-git" / "manifest.csv")
    assert {s.label for s in samples} == {0, 1} and all(Path(s.path).is_file() for s in samples)


def test_wrong_pinned_commit_is_refused(tmp_path):
    repo, _ = make_repo(tmp_path)
    with pytest.raises(SourceError, match="not in"):
        ig.import_git(source("0" * 40), repo, tmp_path / "out")
    with pytest.raises(SourceError, match="40-hex"):
        ig.import_git(source("HEAD"), repo, tmp_path / "out")
    assert not (tmp_path / "out" / "toy-git").exists()


def test_reserved_repositories_are_refused_by_name(tmp_path):
    for repo in ("ML72/AI-Image-Classifier-Playground", "AI-Image-Gen/generator-testing",
                 "Laboratoriet/real-or-ai-game", "kaivalyagandhi/ai-or-not-game",
                 "drewnoakes/metadata-extractor-images"):
        assert is_reserved_repo(repo) and repo.lower() in RESERVED_REPOS
        assert is_reserved_repo(f"https://github.com/{repo}.git")
        assert is_reserved_repo(repo.upper())
        with pytest.raises(ValueError, match="reserved"):
            source("a" * 40, repo=repo)
    assert is_reserved_repo("someone/gnome-backgrounds")  # the Debian wallpaper patterns too
    assert not is_reserved_repo(REPO)
    assert not any(is_reserved_repo(s.repo) for s in GIT_SOURCES)
    # a local clone whose remote is a reserved repository is refused before anything is read
    repo, commit = make_repo(tmp_path)
    git(repo, "remote", "add", "origin", "https://github.com/drewnoakes/metadata-extractor-images")
    with pytest.raises(SourceError, match="reserved"):
        check_commit(repo, REPO, commit)


def test_heldout_sources_stay_out_of_train_csv(tmp_path):
    repo, commit = make_repo(tmp_path)
    out = tmp_path / "out"
    ig.import_git(source(commit), repo, out)
    held = source(commit, name="toy-held", held_out=True,
                  rules=(GitRule("photos/street.jpg", "real", "photo"),))
    held_rows = ig.import_git(held, repo, out)
    assert {r["split"] for r in held_rows} == {"heldout"}
    index = write_index(out, ["toy-git", "toy-held"])
    train = rows_of(out / "train.csv")
    assert not any(r["orig"] == "photos/street.jpg" for r in train)  # its pixels are held out
    assert index["removed_as_in_heldout"] == 1
    assert [r["orig"] for r in rows_of(out / "heldout.csv")] == ["photos/street.jpg"]
    assert all(r["group"] for r in train)


def test_stamp_and_find_local(tmp_path):
    repo, commit = make_repo(tmp_path)
    src = source(commit)
    ig.import_git(src, repo, tmp_path / "out")
    assert ig.stamp_matches(tmp_path / "out" / "toy-git", src)
    assert not ig.stamp_matches(tmp_path / "out" / "toy-git", source(commit, min_side=64))
    assert find_local(REPO, [tmp_path / "clones"]) == repo
    assert find_local("someone/other", [tmp_path / "clones"]) is None


def test_strip_jpeg_keeps_pixels_and_drops_trailing_data():
    data = jpeg_with_everything(noise(64, 48, 7))
    stripped = strip_jpeg(data)
    assert stripped.endswith(b"\xff\xd9") and len(stripped) < len(data)
    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    b = np.asarray(Image.open(io.BytesIO(stripped)).convert("RGB"))
    assert np.array_equal(a, b)
    assert has_metadata(stripped) == []


def test_comfy_resolver_reads_the_embedded_workflow(tmp_path):
    class FakeCtx:
        def __init__(self, blob: bytes):
            self._blob = blob

        def blob(self, path: str) -> bytes:
            return self._blob

    assert comfy_workflow_model("x.png", FakeCtx(png_with_workflow(noise(100, 100, 1)))) \
        == "flux/flux.1-dev"
    plain = io.BytesIO()
    noise(100, 100, 1).save(plain, "PNG")
    assert comfy_workflow_model("x.png", FakeCtx(plain.getvalue())) is None


def test_cli_lists_sources(capsys):
    from train.sources.git_cli import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "nano-banana-gallery" in out and "heldout" in out
