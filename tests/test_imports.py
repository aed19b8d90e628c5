"""The import rule: worker -> detector and train -> detector, never the other way or sideways."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "detector": {"worker", "train"},
    "train": {"worker"},
    "worker": {"train"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_packages_import_only_downwards():
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = imported_top_levels(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_nothing_outside_worker_imports_worker():
    # Harnesses (tests/, bench/) drive the worker from outside; library code never does.
    offenders = []
    for package in ("detector", "train"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "worker" in imported_top_levels(path):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_detector_reads_no_environment_and_no_services():
    for path in sorted((ROOT / "detector").rglob("*.py")):
        text = path.read_text()
        names = imported_top_levels(path)
        assert not names & {"kafka", "redis", "pydantic_settings"}, path
        assert "os.environ" not in text and "getenv" not in text, path
