"""The layering of ARCHITECTURE.md, checked on the source: who may import whom, and no import cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("wsi_core", "vis_utils", "models", "heatmaps", "viewer")
# package -> top-level names it must never import (module level or inside a function)
FORBIDDEN = {
    "wsi_core": {"torch", "timm", "torchvision", "models", "heatmaps", "vis_utils", "viewer"},
    "vis_utils": {"torch", "timm", "torchvision", "models", "heatmaps", "viewer"},
    "viewer": {"torch", "timm", "torchvision", "models", "heatmaps"},
    "models": {"heatmaps", "viewer"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, *, module_level_only: bool) -> set[str]:
    """Absolute module names imported by ``name`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_layering(pkg):
    bad = []
    for name, path in _modules().items():
        if name.split(".")[0] != pkg:
            continue
        for imp in _imports(name, path, module_level_only=False):
            if imp.split(".")[0] in FORBIDDEN[pkg]:
                bad.append(f"{name} imports {imp}")
    assert not bad, bad


def test_no_import_cycles():
    mods = _modules()
    # an import of an ancestor package (``from . import x``) runs that package already being imported
    graph = {n: {i for i in _imports(n, p, module_level_only=True) if i in mods and not (n + ".").startswith(i + ".")}
             for n, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            assert cycle is None, " -> ".join(cycle)


def _code_strings(path: Path) -> str:
    """The string literals of a module's code, without docstrings and ``description=``/``help=`` texts."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg in ("description", "help"):
            skip |= {id(n) for n in ast.walk(node.value)}
    return "\n".join(n.value for n in ast.walk(tree)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip)


def test_score_dataset_names_and_output_patterns_live_in_one_module():
    """The score files' dataset names and file names only in wsi_core/formats.py, the contour files'
    names only in wsi_core/tissue.py (the torch-free viewer needs both and never imports heatmaps),
    every other output file-name pattern only in heatmaps/layout.py (docstrings and help texts may
    mention them). ``_roi_`` is in two names: the fine pass (formats) and the production heatmap
    (layout)."""
    formats, layout, tissue = "wsi_core/formats.py", "heatmaps/layout.py", "wsi_core/tissue.py"
    needles = {"attention_scores": [formats], "attention_raw": [formats], "class_scores": [formats],
               "_blockmap.h5": [formats], "_coords.h5": [formats], "_roi_": [layout, formats],
               "_orig_": [layout], "_colorbar.png": [layout], "_scale.json": [layout],
               "sampled_patches": [layout], "_mask.jpg": [layout], "_tissue.geojson": [tissue],
               "_mask.pkl": [tissue], "_state.json": [layout]}
    code = {str(p.relative_to(REPO)): _code_strings(p) for p in _modules().values()}
    for needle, homes in needles.items():
        where = sorted(name for name, text in code.items() if needle in text)
        assert where == sorted(homes), (needle, where)


def test_only_models_train_imports_the_training_stack():
    """Lightning, TensorBoard, scikit-learn and vis_utils are models/train's (DESIGN §2): the rest of
    models/ (what the heatmap pipeline loads) never imports them."""
    stack = {"lightning", "pytorch_lightning", "tensorboard", "sklearn", "vis_utils"}
    bad = [f"{name} imports {imp}" for name, path in _modules().items()
           if name.split(".")[0] == "models" and not name.startswith("models.train")
           for imp in _imports(name, path, module_level_only=False) if imp.split(".")[0] in stack]
    assert not bad, bad
