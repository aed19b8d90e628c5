"""Provenance is portable: data named by source and commit, files by name, no absolute paths."""
from __future__ import annotations

from train.data.records import SourceConfig, Sample
from train.fit.provenance import data_sources, portable


def test_absolute_paths_become_names_and_the_rest_is_kept():
    value = {"a": "/srv/trainer/cache/starter/clip.safetensors", "b": ["rel/x.csv", "/"],
             "c": 3, "d": {"e": "/data/aigi/manifest.csv"}}
    assert portable(value) == {"a": "clip.safetensors", "b": ["rel/x.csv", "/"], "c": 3,
                               "d": {"e": "manifest.csv"}}


def test_sources_are_described_by_what_their_images_came_from():
    sources = (SourceConfig(path="/tmp/x/sources/train.csv", weight=2.0),
               SourceConfig(path="/data/aigi/manifest.csv"))
    samples = [Sample("a.png", 1, "flux/flux.1-dev", "owner/repo@0123abc", "a.png", origin=0),
               Sample("b.png", 0, "", "owner/photos@4567def", "b.png", origin=0),
               Sample("c.png", 0, "", "owner/photos@4567def", "c.png", origin=0),
               Sample("d.png", 0, "", "", "d.png", origin=1)]
    first, second = data_sources(sources, samples)
    assert first["path"] == "train.csv" and first["weight"] == 2.0
    assert first["images_by_source"] == {"owner/photos@4567def": 2, "owner/repo@0123abc": 1}
    assert second["path"] == "manifest.csv" and second["images_by_source"] == {"(unnamed)": 1}
