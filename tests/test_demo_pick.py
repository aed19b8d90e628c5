"""The demo's seeded pick of labelled images (the streaming part runs in scripts/demo.sh)."""
from __future__ import annotations

from tests.conftest import make_image
from demo.report import pick


def test_pick_is_half_real_half_ai_from_the_named_generators_and_seeded(tmp_path):
    rows = ["path,label,generator,source"]
    for i in range(6):
        make_image(20, 20, seed=i).save(tmp_path / f"r{i}.png")
        rows.append(f"r{i}.png,real,,x")
        gen = "seen" if i % 2 else "unseen"
        make_image(20, 20, seed=10 + i).save(tmp_path / f"f{i}.png")
        rows.append(f"f{i}.png,fake,{gen},x")
    rows.append("missing.png,real,,x")  # listed but not on disk: never picked
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    picked = pick(tmp_path / "m.csv", 6, "unseen")
    assert sorted(picked.values()) == ["AI (unseen)"] * 3 + ["real"] * 3
    assert all(p.is_file() for p in picked)
    assert picked == pick(tmp_path / "m.csv", 6, "unseen")
