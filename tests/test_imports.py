"""The packages form layers: each imports only the layers below it, so there is no import cycle
and no upward arrow. Read from the source (every ``import`` statement, at any depth, lazy ones too)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. A package may import any package of a lower layer; the three families sit side by
# side and never import one another.
LAYERS = [
    {"zoo"},
    {"wsl.weights"},
    {"wsl.nn", "wsl.data"},
    {"wsl.core"},
    {"wsl.prediction", "wsl.diffusion", "wsl.hyper", "wsl.interchange", "wsl.merging", "wsl.landscape"},
    {"wsl.cli"},
]
LEVEL = {pkg: k for k, layer in enumerate(LAYERS) for pkg in layer}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "zoo":
        return "zoo"
    if parts[0] == "wsl" and len(parts) > 1:
        return ".".join(parts[:2])
    return None


def imports(path: Path, module: str) -> list[str]:
    """Every module ``path`` imports (relative imports resolved against ``module``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level] if path.name != "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                out.append(".".join([*base, *([node.module] if node.module else [])]))
            else:
                out.append(node.module)
    return out


def edges() -> list[tuple[str, str, str]]:
    """(file, importing package, imported package) for every import between two packages."""
    found = []
    for path in sorted([*ROOT.glob("wsl/**/*.py"), *ROOT.glob("zoo/**/*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        source = package_of(module)
        for name in imports(path, module):
            target = package_of(name)
            if source and target and target != source:
                found.append((str(path.relative_to(ROOT)), source, target))
    return found


def test_every_package_has_a_layer():
    packages = {package_of(".".join(p.relative_to(ROOT).with_suffix("").parts))
                for p in [*ROOT.glob("wsl/*/__init__.py"), *ROOT.glob("zoo/__init__.py")]}
    assert packages <= set(LEVEL), f"packages without a layer: {sorted(packages - set(LEVEL))}"


def test_no_package_imports_upward_or_sideways():
    bad = [f"{f}: {src} imports {dst}" for f, src, dst in edges()
           if src in LEVEL and dst in LEVEL and LEVEL[dst] >= LEVEL[src]]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The reader itself: a relative and an absolute import both resolve to their package."""
    f = tmp_path / "x.py"
    f.write_text("from .store import Zoo\nimport wsl.cli.main\nfrom wsl.core import module\n")
    assert imports(f, "zoo.generate") == ["zoo.store", "wsl.cli.main", "wsl.core"]
    assert [package_of(m) for m in imports(f, "zoo.generate")] == ["zoo", "wsl.cli", "wsl.core"]
