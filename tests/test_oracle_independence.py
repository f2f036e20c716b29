"""The oracle must not import the code it checks (samplers, detect, stages, or the build that drives them)."""

from __future__ import annotations

import ast
from pathlib import Path

import facedata.oracle

CHECKED = ("facedata.samplers", "facedata.detect", "facedata.stages", "facedata.build", "facedata.buildworker",
           "facedata.imageio")


def _imports(path: Path) -> list[str]:
    """Every module imported by `path`, at the top or inside a function (lazy imports count)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_oracle_imports_none_of_the_checked_code():
    folder = Path(facedata.oracle.__file__).parent
    bad = [f"{path.name}: {name}" for path in sorted(folder.glob("*.py")) for name in _imports(path)
           if any(name == mod or name.startswith(mod + ".") for mod in CHECKED)]
    assert len(list(folder.glob("*.py"))) >= 5
    assert bad == []


def test_oracle_modules_share_only_public_names():
    """keypoints.py builds on labels.py and pixels.py through their public names, never their private ones."""
    folder = Path(facedata.oracle.__file__).parent
    private = [f"{path.name}: {node.module}.{alias.name}" for path in sorted(folder.glob("*.py"))
               for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("facedata")
               for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
    assert private == []
