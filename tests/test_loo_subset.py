"""`featdistill eval --loo` on a combined bundle: the held-out part is rebuilt from each expert's
split record, and only what every expert held out counts as unseen."""
from train.data.records import Sample
from train.evaluate.scoring import loo_subset

SAMPLES = [Sample(f"r{i}.png", 0, key=f"r{i}") for i in range(40)] + [
    Sample("a.png", 1, "gen-a", key="a"), Sample("b.png", 1, "gen-b", key="b"),
    Sample("c.png", 1, "gen-c", key="c")]


def _data(holdout, seen):
    return {"split": {"kind": "leave_out", "holdout": holdout, "seed": 0, "real_fraction": 0.5,
                      "fake_fraction": 0.0},
            "train_generators": seen}


def test_a_trained_bundle_uses_its_own_split():
    subset, unseen = loo_subset(SAMPLES, {"data": _data(["gen-a"], ["gen-b", "gen-c"])})
    assert {s.key for s in subset if s.label} == {"a"} and unseen == ["gen-a"]
    assert 0 < sum(1 for s in subset if not s.label) < 40


def test_a_combined_bundle_keeps_what_every_expert_held_out():
    same = {"experts": {"x": {"data": _data(["gen-a", "gen-b"], ["gen-c"])},
                        "y": {"data": _data(["gen-a", "gen-b"], ["gen-c"])}}}
    subset, unseen = loo_subset(SAMPLES, same)
    assert unseen == ["gen-a", "gen-b"]
    alone, _ = loo_subset(SAMPLES, {"data": _data(["gen-a", "gen-b"], ["gen-c"])})
    assert [s.key for s in subset] == [s.key for s in alone]

    differ = {"experts": {"x": {"data": _data(["gen-a", "gen-b"], ["gen-c"])},
                          "y": {"data": _data(["gen-a"], ["gen-b", "gen-c"])}}}
    subset, unseen = loo_subset(SAMPLES, differ)
    assert {s.key for s in subset if s.label} == {"a"} and unseen == ["gen-a"]


def test_an_expert_without_a_split_record_means_no_held_out_part():
    provenance = {"experts": {"x": {"data": _data(["gen-a"], [])}, "y": {"trainer": "other"}}}
    assert loo_subset(SAMPLES, provenance) == ([], [])
