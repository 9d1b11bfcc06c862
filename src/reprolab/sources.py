"""The project's own source files that a module can run: its import closure, read from the code.

dvc.yaml lists, for each stage, its module and everything that module imports from this package
(a test checks the list against `closure`), so editing any code a stage runs re-runs that stage.
A run key holds the digest of the training code's closure, so changed training code is never
mistaken for the code that made an earlier run.

Imports are found statically, in every function too (imports where they are used still run);
imports under `if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Optional

PACKAGE = "reprolab"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name: str, package_dir: Optional[Path] = None) -> Path:
    """The file of a module of this package (`reprolab.stages.train` -> .../stages/train.py),
    or of another copy of it at `package_dir` (a run's recorded source)."""
    parts = name.split(".")[1:]
    path = (package_dir or PACKAGE_DIR).joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_module(name: str, package_dir: Path) -> bool:
    parts = name.split(".")[1:]
    path = package_dir.joinpath(*parts)
    return path.is_dir() or path.with_suffix(".py").is_file()


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, (ast.Name, ast.Attribute))
        and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")
    )


def _imports(name: str, package_dir: Path) -> set[str]:
    """The package's modules that module `name` imports, with their parent packages."""
    tree = ast.parse(module_file(name, package_dir).read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if _is_module(f"{node.module}.{alias.name}", package_dir)
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    with_parents: set[str] = set()
    for module in found | {name}:
        parts = module.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def closure(name: str, package_dir: Optional[Path] = None) -> list[Path]:
    """Every source file of this package that importing and running module `name` can execute."""
    package_dir = package_dir or PACKAGE_DIR
    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_imports(module, package_dir) - seen)
    return sorted(module_file(module, package_dir) for module in seen)


def training_code() -> dict[str, str]:
    """What trains, as a run key holds it: the digest of `reprolab.training`'s closure, and the
    torch, NumPy and SciPy versions (SciPy's BLAS computes the portable numerics' products)."""
    from importlib.metadata import version

    return {"code": code_digest("reprolab.training"), **{name: version(name) for name in ("torch", "numpy", "scipy")}}


def code_digest(name: str, package_dir: Optional[Path] = None) -> str:
    """SHA-256 over the closure's files (their paths within the package and their bytes)."""
    package_dir = package_dir or PACKAGE_DIR
    digest = hashlib.sha256()
    for path in closure(name, package_dir):
        digest.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
