"""House rules that drift unless a test holds them: files under 400 lines, functions that fit on
a screen (HOUSE_STYLE.md; issue 14). Counted over the project's code and tests, not the venv."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shell", "detector", "convert", "worker", "train", "demo", "bench", "tests")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_file_is_under_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"split these by job: {long}"


def test_every_function_fits_on_a_screen():
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _layout_paths() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    # The first cell's paths: `dir/` or `file.py` (other code words there name modules).
    cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {word.strip("`").rstrip("/") for cell in cells for word in cell.replace(",", " ").split()
            if word.startswith("`") and ("/" in word or word.endswith('.py`'))}


def test_the_readme_layout_table_matches_the_tree():
    named = _layout_paths()
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README's layout table names paths that do not exist: {missing}"
    packages = {str(init.parent.relative_to(ROOT)) for pkg in PACKAGES[:-2]
                for init in (ROOT / pkg).rglob("__init__.py")}
    unnamed = sorted(packages - named)
    assert not unnamed, f"packages missing from README's layout table: {unnamed}"
