"""docs/architecture.md, the map of the code, stays true: every path it names exists, every module is named."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "architecture.md"
PACKAGES = ("marl", "envs", "agents")
TOP = ("marl", "envs", "agents", "configs", "tests", "docs", "benchmarks", "examples", "replays", ".ci")


def _named_paths() -> set[str]:
    """Backquoted repository paths in the map: `a/b.py`, `a/b/`, `.ci/run` (placeholders such as <env> left out).

    A token counts as a path when it starts with one of the repository's top-level folders or ends with a file
    suffix or a slash; TensorBoard tags such as `graph/planted_recall` are neither.
    """
    tokens = re.findall(r"`([^`\s]+)`", MAP.read_text(encoding="utf-8"))
    return {t for t in tokens if "/" in t and "<" not in t and "*" not in t
            and (t.split("/")[0] in TOP or t.endswith("/") or re.search(r"\.[a-z]{2,4}$", t))
            and not t.startswith(("runs/", "RUN_DIR/"))}


def test_every_path_the_map_names_exists():
    paths = _named_paths()
    assert len(paths) > 30  # the map names its modules by path; an empty parse would pass vacuously
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_module_and_package_is_named_in_the_map():
    named = _named_paths()
    modules = [p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts]
    packages = [p.parent.relative_to(ROOT).as_posix() + "/" for pkg in PACKAGES
                for p in (ROOT / pkg).rglob("__init__.py") if p.parent.relative_to(ROOT).as_posix() not in PACKAGES]
    assert len(modules) > 20
    forgotten = sorted(m for m in modules + packages if m not in named)
    assert not forgotten, f"docs/architecture.md does not name: {forgotten}"
