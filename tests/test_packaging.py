"""setup.py declares every third-party package that dispatch/ imports."""
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"yaml": "pyyaml", "espnet2": "espnet"}


def imported_top_level_modules() -> set:
    names = set()
    for path in (ROOT / "dispatch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dispatch"}


def declared_requirements() -> set:
    text = (ROOT / "setup.py").read_text()
    block = text[text.index("install_requires=["):text.index("],", text.index("install_requires=["))]
    return {re.split(r"[<>=!~ ]", item)[0].lower().replace("-", "_")
            for item in re.findall(r'"([^"]+)"', block)}


def test_every_imported_package_is_declared():
    declared = declared_requirements()
    missing = sorted(DISTRIBUTION.get(name, name) for name in imported_top_level_modules()
                     if DISTRIBUTION.get(name, name).lower() not in declared)
    assert not missing, f"imported by dispatch/ but not in setup.py's install_requires: {missing}"
