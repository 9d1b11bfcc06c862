"""Draw the package's imports as a Mermaid graph in docs/architecture.md, from grimp's graph of
the code (the one `lint-imports` checks the layers on): one box per package or top-level module,
an arrow where one imports the other (at run time or for type checking), higher layers above.

    python scripts/import_graph.py            # rewrite the graph in docs/architecture.md
    python scripts/import_graph.py --check    # exit 1 if the drawn graph is not the code's
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp

DOC = Path(__file__).resolve().parents[1] / "docs/architecture.md"
BEGIN, END = "<!-- import graph: scripts/import_graph.py -->", "<!-- end of import graph -->"


def unit(module: str) -> str:
    """`reprolab.tracking.store` -> `tracking`; `reprolab.cli` -> `cli`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def edges() -> set[tuple[str, str]]:
    graph = grimp.build_graph("reprolab", exclude_type_checking_imports=False)
    found = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = unit(module), unit(imported)
            if a != b and "reprolab" not in (a, b):
                found.add((a, b))
    return found


def mermaid() -> str:
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"    {a} --> {b}" for a, b in sorted(edges())]
    return "\n".join([*lines, "```"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + mermaid() + "\n" + text[end:]
    if args.check:
        if new != text:
            print(f"{DOC} does not draw the code's imports: run python scripts/import_graph.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
