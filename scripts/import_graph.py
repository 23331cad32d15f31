#!/usr/bin/env python3
"""The import graph of Taskstream's packages, and the rule that keeps it pointing one way.

    python scripts/import_graph.py            package edges, with how many imports each
    python scripts/import_graph.py --modules  module edges
    python scripts/import_graph.py --check    exit 1 and list every import that breaks
                                              the layers (tests/test_architecture.py runs it)

The layers, top to bottom (docs/architecture.md, "Dependencies"): a package may import
those below it, never those above. Management commands are entry points: nothing imports
them. Only imports are read (AST), nothing is executed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Top first. Each package may import the ones after it.
LAYERS = ["config", "realtime", "tasks", "streaming"]
MAX_MODULE_LINES = 400


def modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
            found.append((node.lineno, node.module))
    return found


def violations(root: Path) -> list[str]:
    problems: list[str] = []
    for name, path in modules(root).items():
        where = path.relative_to(root)
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES and name.split(".")[0] != "config":
            problems.append(f"{where}: {lines} lines (at most {MAX_MODULE_LINES})")
        layer = LAYERS.index(name.split(".")[0])
        # One line per import statement: the shortest name it imports says enough.
        statements: dict[int, str] = {}
        for lineno, target in imports(path):
            if lineno not in statements or len(target) < len(statements[lineno]):
                statements[lineno] = target
        for lineno, target in sorted(statements.items()):
            top = target.split(".")[0]
            if top in LAYERS and LAYERS.index(top) < layer:
                problems.append(f"{where}:{lineno}: {name.split('.')[0]} imports {target}")
            if ".management.commands" in target and ".management.commands" not in name:
                problems.append(f"{where}:{lineno}: imports the command module {target}")
    return sorted(set(problems))


def edges(root: Path, *, by_module: bool) -> Counter[tuple[str, str]]:
    known = modules(root)
    counted: Counter[tuple[str, str]] = Counter()
    for name, path in known.items():
        for _lineno, target in imports(path):
            if target not in known:
                continue
            src, dst = (name, target) if by_module else (name.split(".")[0], target.split(".")[0])
            if src != dst:
                counted[(src, dst)] += 1
    return counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", action="store_true", help="module edges, not packages")
    parser.add_argument("--check", action="store_true", help="fail on imports against the layers")
    parser.add_argument("--root", type=Path, default=ROOT, help="a checkout to read")
    args = parser.parse_args()
    if args.check:
        problems = violations(args.root)
        for problem in problems:
            print(problem)
        print(f"{len(problems)} violation(s) of the layers {' > '.join(LAYERS)}")
        return 1 if problems else 0
    for (src, dst), count in sorted(edges(args.root, by_module=args.modules).items()):
        print(f"{src} -> {dst}  ({count})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
