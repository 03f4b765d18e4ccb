"""The package's structure: imports go down the layers only, no cycles, libp2p in overlay/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dmoa_p2p"
MAX_LINES = 400

# Each top-level module or package of dmoa_p2p and its height: a module may import only
# what sits strictly lower, so equal heights (http and control, gossip and queue) are
# siblings that must not import each other.
LAYERS: dict[str, int] = {
    "__main__": 110,
    "cli": 100,
    "bench": 90,  # the harnesses: benchmarks, simulations, the testing kit, localhost swarms
    "eval": 90,
    "simulate": 85,
    "testing": 80,
    "swarm": 75,
    "app": 70,  # the composition root
    "http": 60,  # the front ends
    "control": 60,
    "node": 50,
    "admission": 45,
    "moa": 40,
    "gossip": 35,
    "queue": 35,
    "backends": 30,
    "overlay": 25,
    "wire": 20,
    "registry": 15,
    "stability": 10,
    "identity": 10,
    "config": 10,
    "exceptions": 5,
    "logs": 5,
}
LIBP2P_MODULES = ("libp2p", "multiaddr", "trio_typing")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth (lazy imports count too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit_of(module: str) -> str:
    """`dmoa_p2p.moa.engine` -> `moa`: the layer a module belongs to."""
    return module.split(".")[1] if module.count(".") else "__init__"


def test_every_module_has_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in sources()} - {"__init__"}
    assert units <= set(LAYERS), f"give these a layer in LAYERS: {units - set(LAYERS)}"


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for path in sources():
        here = unit_of(module_name(path))
        for target in imports(path):
            if not target.startswith("dmoa_p2p.") or here == "__init__":
                continue
            there = unit_of(target)
            if there != here and LAYERS[here] <= LAYERS[there]:
                wrong.append(f"{module_name(path)} imports {target}")
    assert wrong == []


def test_no_module_imports_another_packages_private_modules() -> None:
    wrong = []
    for path in [*sources(), *(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]:
        here = module_name(path) if path.is_relative_to(PACKAGE) else "outside"
        for target in imports(path):
            parts = target.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_")]
            if parts[0] != "dmoa_p2p" or not private:
                continue
            owner = ".".join(parts[: private[0]])
            if not here.startswith(owner + ".") and here != owner:
                wrong.append(f"{here} ({path.relative_to(ROOT)}) imports {target}")
    assert wrong == []


def test_no_import_cycles_between_modules() -> None:
    known = {module_name(path) for path in sources()}
    graph = {module_name(path): {t for t in imports(path) if t in known} for path in sources()}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            module, trail = stack.pop()
            for target in graph[module]:
                if target == start and len(trail) > 1:
                    cycles.append(" -> ".join([*trail, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
    assert cycles == []


def test_libp2p_is_imported_only_inside_the_overlay() -> None:
    wrong = [
        f"{module_name(path)} imports {target}"
        for path in sources()
        if not path.is_relative_to(PACKAGE / "overlay")
        for target in imports(path)
        if target.split(".")[0] in LIBP2P_MODULES
    ]
    assert wrong == []


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it"


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    upward = tmp_path / "bad.py"
    upward.write_text("from dmoa_p2p.http import build_app\n")
    here, there = "node", unit_of(next(imports(upward)))
    assert LAYERS[here] <= LAYERS[there]  # what test_imports_go_down_the_layers rejects
    assert list(imports(upward)) == ["dmoa_p2p.http"]
