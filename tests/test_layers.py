"""The house's layering: imports only run downward, and there are no circles.

Each module of pxeprov belongs to a floor (ARCHITECTURE.md draws them); a module may import
from its own floor or the floors below, never from above. The import graph is read from the
source (every import statement, also those inside functions) and must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pxeprov"

# Bottom first. A module's floor is that of the longest prefix that names it.
FLOORS: list[tuple[str, ...]] = [
    ("pxeprov.errors",),
    ("pxeprov.paths", "pxeprov.syntax", "pxeprov.progress", "pxeprov.arch"),
    ("pxeprov.fsutil", "pxeprov.system"),
    (
        "pxeprov.state",
        "pxeprov.network",
        "pxeprov.ports",
        "pxeprov.dhcpprobe",
        "pxeprov.firewall",
        "pxeprov.vlab",
        "pxeprov.menucheck",
        "pxeprov.journal",
        "pxeprov.wol",
    ),
    # boot chains; image code; logs; the imaging jobs' reports; the repository's shares;
    # multicast sessions' feeder and progress
    (
        "pxeprov.boot",
        "pxeprov.images",
        "pxeprov.bootlog",
        "pxeprov.jobreport",
        "pxeprov.repository",
        "pxeprov.multicast",
    ),
    ("pxeprov.render",),
    ("pxeprov.plan",),
    ("pxeprov.apply",),
    ("pxeprov.pipeline",),
    ("pxeprov.commands",),
    ("pxeprov.cli", "pxeprov.__main__"),
]
TOP = ("pxeprov",)  # the package itself (its version): below everything


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The pxeprov modules `path` imports (`from pxeprov import x` is module x when x is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pxeprov")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("pxeprov"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def floor(module: str) -> int:
    if module in TOP:
        return -1
    best = max(
        (
            (len(prefix), i)
            for i, names in enumerate(FLOORS)
            for prefix in names
            if module == prefix or module.startswith(prefix + ".")
        ),
        default=None,
    )
    assert best is not None, f"{module} has no floor: add it to FLOORS (and ARCHITECTURE.md)"
    return best[1]


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {m: imports(p, known) - {m} for m, p in found.items()}


def test_imports_only_run_down() -> None:
    upward = [
        f"{m} (floor {floor(m)}) imports {i} (floor {floor(i)})"
        for m, targets in graph().items()
        for i in sorted(targets)
        if floor(i) > floor(m)
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import from the CLI down in `state` is caught."""
    bad = tmp_path / "state.py"
    bad.write_text("from pxeprov import cli\n")
    found = imports(bad, set(modules()))
    assert "pxeprov.cli" in found and floor("pxeprov.cli") > floor("pxeprov.state")
