"""train.sources.packages on tiny packages made in tmp dirs: no network, no downloads, no shared data."""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data.records import DataError, read_manifest
from train.sources import packages as imps
from train.sources.files import MANIFEST_COLUMNS, match_glob, write_index
from train.sources.package_sources import IMPORTERS, REGISTRY
from train.sources.package_spec import PIPELINE_VERSION, Importer, Rule, is_reserved

PKG = "usr/share/pkg"


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def rgba_with_coverage(w: int, h: int, visible: float, seed: int = 0) -> Image.Image:
    img = noise(w, h, seed).convert("RGBA")
    alpha = np.zeros((h, w), np.uint8)
    alpha[: max(1, int(round(h * visible))), :] = 255  # the top rows are visible
    img.putalpha(Image.fromarray(alpha, "L"))
    return img


def make_package(root: Path) -> Path:
    """A fake extracted .deb with one file per case the pipeline must handle."""
    d = root / PKG
    (d / "art").mkdir(parents=True)
    (d / "skip").mkdir()
    noise(200, 150, 1).save(d / "art/a_keep.png")
    noise(200, 150, 1).save(d / "art/z_dup.png", compress_level=1)  # same pixels, other bytes
    noise(50, 50, 2).save(d / "art/small.png")
    Image.new("RGB", (200, 200), (120, 130, 140)).save(d / "art/blank.png")
    noise(1000, 100, 3).save(d / "art/wide.png")
    noise(160, 120, 4).save(d / "art/photo.jpg", quality=90)
    noise(128, 128, 5).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "art/palette.png")
    rgba_with_coverage(120, 100, 0.5, 6).save(d / "art/half_alpha.png")
    rgba_with_coverage(120, 100, 0.02, 7).save(d / "art/mostly_clear.png")
    (d / "art/vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (d / "art/notes.txt").write_text("not an image")
    noise(130, 130, 8).save(d / "skip/excluded.png")
    noise(140, 140, 9).save(d / "art/name with space.png")
    return root


def importer(**kw) -> Importer:
    base = dict(name="toy", manager="apt", package="toy-art", version="1.0-1", licence="CC0-1.0",
                kind="real",
                rules=(Rule(f"{PKG}/**/*", "drawing", exclude=(f"{PKG}/skip/**",)),))
    base.update(kw)
    return Importer(**base)


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------


def test_glob_matching():
    assert match_glob("a/**/*.png", "a/x.png")
    assert match_glob("a/**/*.png", "a/b/c/x.png")
    assert not match_glob("a/**/*.png", "b/a/x.png")
    assert not match_glob("a/*.png", "a/b/x.png")  # * stays within one folder
    assert match_glob("a/*/x_*.png", "a/b/x_1.png")
    assert match_glob("a/**", "a/b/c")


def test_pipeline_filters_normalises_and_writes_manifest(tmp_path):
    pkg = make_package(tmp_path / "pkg")
    out = tmp_path / "sources"
    stats = Counter()
    rows = imps.import_from_folder(importer(), pkg, out, stats=stats)

    kept = {r["orig"].rsplit("/", 1)[-1] for r in rows}
    assert kept == {"a_keep.png", "photo.jpg", "palette.png", "half_alpha.png", "name with space.png"}
    assert stats["small"] == 1 and stats["blank"] == 1 and stats["aspect"] == 1
    assert stats["transparent"] == 1 and stats["duplicate"] == 1
    assert stats["candidates"] == 10  # svg, txt and the excluded folder are never candidates

    manifest = out / "toy" / "manifest.csv"
    assert manifest.read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    by_name = {r["orig"].rsplit("/", 1)[-1]: r for r in rows_of(manifest)}
    for r in by_name.values():
        assert (manifest.parent / r["path"]).is_file()
        assert r["label"] == "real" and r["generator"] == "" and r["split"] == "train"
        assert r["source"] == "toy-art@1.0-1" and r["licence"] == "CC0-1.0" and r["category"] == "drawing"
        assert r["path"].startswith("images/pkg/")  # usr/share/ stripped
        assert " " not in r["path"]
    # RGB PNG and JPEG: copied byte for byte, format kept
    src = pkg / PKG / "art"
    assert (manifest.parent / by_name["a_keep.png"]["path"]).read_bytes() == (src / "a_keep.png").read_bytes()
    assert by_name["photo.jpg"]["path"].endswith(".jpg")
    assert (manifest.parent / by_name["photo.jpg"]["path"]).read_bytes() == (src / "photo.jpg").read_bytes()
    # palette and alpha: RGB, alpha composited on white
    pal = Image.open(manifest.parent / by_name["palette.png"]["path"])
    assert pal.mode == "RGB" and pal.size == (128, 128)
    half = Image.open(manifest.parent / by_name["half_alpha.png"]["path"])
    assert half.mode == "RGB" and half.getpixel((5, 95)) == (255, 255, 255)
    assert int(by_name["half_alpha.png"]["width"]) == 120
    # the training code reads the manifest as it is
    samples = read_manifest(manifest)
    assert len(samples) == 5 and all(s.label == 0 and s.generator == "" for s in samples)
    assert all(Path(s.path).is_file() for s in samples)


def test_duplicates_keep_the_first_path_in_sorted_order(tmp_path):
    rows = imps.import_from_folder(importer(), make_package(tmp_path / "pkg"), tmp_path / "out")
    origs = [r["orig"] for r in rows]
    assert any(o.endswith("a_keep.png") for o in origs)
    assert not any(o.endswith("z_dup.png") for o in origs)
    assert len({r["sha256"] for r in rows}) == len(rows)


def test_same_package_gives_the_same_manifest(tmp_path):
    a = imps.import_from_folder(importer(), make_package(tmp_path / "p1"), tmp_path / "o1")
    # the same files created in another order, imported again
    pkg2 = make_package(tmp_path / "p2")
    for p in sorted((pkg2 / PKG / "art").iterdir(), reverse=True):
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data)
    b = imps.import_from_folder(importer(), pkg2, tmp_path / "o2")
    assert a == b
    m1 = (tmp_path / "o1/toy/manifest.csv").read_bytes()
    assert m1 == (tmp_path / "o2/toy/manifest.csv").read_bytes()
    paths = [r["path"] for r in rows_of(tmp_path / "o1/toy/manifest.csv")]
    assert paths == sorted(paths)
    # and re-importing into the same folder replaces it without leftovers
    imps.import_from_folder(importer(), tmp_path / "p1", tmp_path / "o1")
    assert (tmp_path / "o1/toy/manifest.csv").read_bytes() == m1
    assert not (tmp_path / "o1/toy.tmp").exists()


def test_reserved_packages_can_never_be_imported():
    """The desktop-wallpaper packages belong to the independent evaluation of our bundles: no
    importer may name one, not even to write an evaluation split."""
    for name in ("gnome-backgrounds", "mate-backgrounds", "plasma-workspace-wallpapers",
                 "ukui-wallpapers", "lomiri-wallpapers", "lomiri-wallpapers-16.04",
                 "sway-backgrounds", "desktop-base", "debian-edu-artwork-emerald"):
        assert is_reserved(name), name
        with pytest.raises(ValueError, match="reserved"):
            importer(package=name)
        with pytest.raises(ValueError, match="reserved"):
            importer(package=name, eval_only=True)
    for name in ("openclipart-png", "wesnoth-1.16-data", "mypaint-data-extras", "hedgewars-data"):
        assert not is_reserved(name), name
    # the registry: no source is reserved, and none is eval_only
    assert not any(imp.manager == "apt" and is_reserved(imp.package) for imp in IMPORTERS)
    assert not any(imp.eval_only for imp in IMPORTERS)
    # the starter's art evaluation: these two whole packages, and nothing else, are held out
    assert {imp.name for imp in IMPORTERS if imp.held_out} == {"supertux", "hedgewars"}
    assert {REGISTRY[n].split for n in ("supertux", "hedgewars")} == {"heldout"}
    with pytest.raises(ValueError, match="exclude each other"):
        importer(package="my-kept-photos", eval_only=True, held_out=True)


def test_eval_only_flag_writes_split_and_stays_out_of_train_index(tmp_path):
    pkg = make_package(tmp_path / "pkg")
    out = tmp_path / "sources"
    ev = importer(name="eval-wall", package="my-kept-photos", eval_only=True,
                  rules=(Rule(f"{PKG}/art/*", "wallpaper"),))
    ev_rows = imps.import_from_folder(ev, pkg, out)
    assert ev_rows and {r["split"] for r in ev_rows} == {"eval_only"}
    # a training source that shares one image with the eval source, plus one of its own
    other = tmp_path / "other" / PKG
    other.mkdir(parents=True)
    noise(200, 150, 1).save(other / "same_as_eval.png")
    noise(200, 150, 42).save(other / "own.png")
    imps.import_from_folder(importer(rules=(Rule(f"{PKG}/*", "drawing"),)), tmp_path / "other", out)

    index = write_index(out, ["eval-wall", "toy"])
    train = rows_of(out / "train.csv")
    evals = rows_of(out / "eval_only.csv")
    assert [r["orig"].rsplit("/", 1)[-1] for r in train] == ["own.png"]
    assert index["removed_as_in_eval"] == 1
    assert {r["split"] for r in evals} == {"eval_only"} and len(evals) == len(ev_rows)
    assert all((out / r["path"]).is_file() for r in train + evals)
    assert len(read_manifest(out / "train.csv")) == 1


def test_held_out_package_goes_to_heldout_csv_not_train(tmp_path):
    pkg = make_package(tmp_path / "pkg")
    out = tmp_path / "sources"
    held = importer(name="held-art", package="toy-game-data", held_out=True,
                    rules=(Rule(f"{PKG}/art/*", "drawing"),))
    held_rows = imps.import_from_folder(held, pkg, out)
    assert held_rows and {r["split"] for r in held_rows} == {"heldout"}
    assert {r["group"] for r in held_rows} == {"real:held-art"}
    # a training source sharing one image with the held-out package, plus one of its own
    other = tmp_path / "other" / PKG
    other.mkdir(parents=True)
    noise(200, 150, 1).save(other / "same_as_held.png")
    noise(200, 150, 42).save(other / "own.png")
    imps.import_from_folder(importer(rules=(Rule(f"{PKG}/*", "drawing"),)), tmp_path / "other", out)

    index = write_index(out, ["held-art", "toy"])
    train, heldout = rows_of(out / "train.csv"), rows_of(out / "heldout.csv")
    assert [r["orig"].rsplit("/", 1)[-1] for r in train] == ["own.png"]
    assert index["removed_as_in_heldout"] == 1 and index["removed_as_in_eval"] == 0
    assert {r["split"] for r in heldout} == {"heldout"} and len(heldout) == len(held_rows)
    assert all(r["path"].startswith("held-art/") for r in heldout)
    assert rows_of(out / "eval_only.csv") == []
    with open(out / "heldout.csv") as f, open(out / "train.csv") as g:
        assert f.readline() == g.readline() == ",".join(MANIFEST_COLUMNS) + "\n"
    # training refuses it, evaluation reads it, and every path resolves
    assert len(read_manifest(out / "train.csv", training=True)) == 1
    with pytest.raises(DataError, match="split=heldout"):
        read_manifest(out / "heldout.csv", training=True)
    samples = read_manifest(out / "heldout.csv")
    assert len(samples) == len(held_rows) and all(s.label == 0 for s in samples)
    assert all(Path(s.path).is_file() for s in samples)


def test_held_out_flag_changes_only_its_own_stamp():
    # the field came later: a training source's stamp is the hash of its config without it, as
    # before, so adding it re-imports only the held-out packages
    plain = importer()
    cfg = {k: v for k, v in asdict(plain).items()
           if k not in ("generate", "notes", "default", "held_out")}
    cfg |= {"pipeline": PIPELINE_VERSION, "generate": None}
    before = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert plain.config_hash() == before
    assert importer(held_out=True).config_hash() != before


def test_crop_cuts_atlases_into_tiles(tmp_path):
    d = tmp_path / "pkg" / PKG
    d.mkdir(parents=True)
    atlas = np.asarray(noise(512, 256, 3)).copy()
    atlas[:, 256:] = 0  # right tile blank
    Image.fromarray(atlas).save(d / "atlas.png")
    imp = importer(rules=(Rule(f"{PKG}/*.png", "pixel-art", crop=256),))
    rows = imps.import_from_folder(imp, tmp_path / "pkg", tmp_path / "out")
    assert [r["orig"] for r in rows] == [f"{PKG}/atlas.png#0,0"]
    assert rows[0]["path"] == "images/pkg/atlas__x0_y0.png"
    tile = Image.open(tmp_path / "out/toy" / rows[0]["path"])
    assert tile.size == (256, 256)
    assert np.array_equal(np.asarray(tile), atlas[:256, :256])


def test_largest_per_dir_and_limit(tmp_path):
    d = tmp_path / "pkg" / PKG
    for i, folder in enumerate(("w1", "w2")):
        (d / folder).mkdir(parents=True)
        for j, size in enumerate((120, 300, 200)):
            noise(size, size, 10 * i + j).save(d / folder / f"{size}.png")
    imp = importer(rules=(Rule(f"{PKG}/*/*.png", "drawing", largest_per_dir=True),))
    rows = imps.import_from_folder(imp, tmp_path / "pkg", tmp_path / "out")
    assert sorted(r["orig"] for r in rows) == [f"{PKG}/w1/300.png", f"{PKG}/w2/300.png"]

    limited = importer(rules=(Rule(f"{PKG}/**/*.png", "drawing", limit=2),))
    rows = imps.import_from_folder(limited, tmp_path / "pkg", tmp_path / "out2")
    everything = imps.import_from_folder(importer(rules=(Rule(f"{PKG}/**/*.png", "drawing"),)),
                                         tmp_path / "pkg", tmp_path / "out3")
    assert len(rows) == 2
    assert {r["sha256"] for r in rows} == set(sorted(r["sha256"] for r in everything)[:2])


def test_oversized_images_are_downscaled_and_16bit_is_scaled(tmp_path, monkeypatch):
    monkeypatch.setattr(imps, "LOADER_MAX_PIXELS", 150 * 150)
    d = tmp_path / "pkg" / PKG
    d.mkdir(parents=True)
    noise(300, 200, 1).save(d / "big.png")
    grey16 = (np.linspace(0, 65535, 120 * 120).reshape(120, 120)).astype(np.uint16)
    Image.fromarray(grey16).save(d / "deep.png")
    stats = Counter()
    rows = imps.import_from_folder(importer(), tmp_path / "pkg", tmp_path / "out", stats=stats)
    by = {r["orig"].rsplit("/", 1)[-1]: r for r in rows}
    big = Image.open(tmp_path / "out/toy" / by["big.png"]["path"])
    assert big.size[0] * big.size[1] <= 150 * 150 and stats["downscaled"] == 1
    deep = np.asarray(Image.open(tmp_path / "out/toy" / by["deep.png"]["path"]))
    assert deep.dtype == np.uint8 and deep.max() == 255 and deep.min() == 0


def test_symlinks_inside_are_followed_and_outside_are_skipped(tmp_path):
    d = tmp_path / "pkg" / PKG
    d.mkdir(parents=True)
    noise(150, 150, 1).save(d / "real.png")
    os.symlink("real.png", d / "link.png")
    outside = tmp_path / "outside.png"
    noise(150, 150, 2).save(outside)
    os.symlink(outside, d / "escape.png")
    stats = Counter()
    rows = imps.import_from_folder(importer(), tmp_path / "pkg", tmp_path / "out", stats=stats)
    # link.png comes first in sorted order; real.png is its duplicate
    assert [r["orig"] for r in rows] == [f"{PKG}/link.png"]
    assert stats["duplicate"] == 1 and stats["candidates"] == 2


def test_stamp_makes_reruns_noops_until_version_or_rules_change(tmp_path, monkeypatch):
    pkg = make_package(tmp_path / "pkg")
    out = tmp_path / "sources"
    imp = importer()
    imps.import_from_folder(imp, pkg, out)
    assert imps.stamp_matches(out / "toy", imp, "1.0-1")
    assert not imps.stamp_matches(out / "toy", imp, "1.0-2")
    changed = importer(rules=(Rule(f"{PKG}/**/*", "painting"),))
    assert not imps.stamp_matches(out / "toy", changed)

    def no_fetch(*a, **k):
        raise AssertionError("an up-to-date source must not be fetched")

    monkeypatch.setattr(imps, "fetch", no_fetch)
    rows, state = imps.run_importer(imp, out)
    assert state == "up to date" and len(rows) == 5


def test_fake_sources_record_their_generator(tmp_path):
    def fake_generate(folder: Path, imp: Importer) -> None:
        (folder / "generated").mkdir(parents=True, exist_ok=True)
        for i in range(imp.count):
            noise(128, 128, 100 + i).save(folder / "generated" / f"{i:03d}.png")

    imp = Importer("toy-gan", "pypi", "toy-gan", "0.1", "MIT", "fake",
                   (Rule("generated/*.png", "ai-toygan"),), generator="toygan",
                   generate=fake_generate, count=3)
    rows = imps.import_from_folder(imp, tmp_path / "wheel", tmp_path / "out")
    assert len(rows) == 3
    assert {(r["label"], r["generator"], r["category"]) for r in rows} == {("fake", "toygan", "ai-toygan")}
    samples = read_manifest(tmp_path / "out/toy-gan/manifest.csv")
    assert all(s.label == 1 and s.generator == "toygan" for s in samples)


def test_importer_validation():
    with pytest.raises(ValueError, match="generator"):
        Importer("x", "pypi", "x", "1", "MIT", "fake", (Rule("*.png", "ai-x"),))
    with pytest.raises(ValueError, match="generator"):
        importer(generator="oops")
    with pytest.raises(ValueError, match="does not fit"):
        importer(rules=(Rule("*.png", "ai-x"),))
    with pytest.raises(ValueError, match="unknown category"):
        importer(rules=(Rule("*.png", "selfie"),))
    assert len(REGISTRY) == len(IMPORTERS)


def test_cli_list_and_unknown_name(capsys):
    assert imps.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "openclipart" in out and "heldout" in out and "eval_only" not in out
    with pytest.raises(SystemExit):
        imps.main(["--only", "no-such-source"])
