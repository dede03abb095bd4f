"""Each distribution declares every library its code imports, not only what arrives with
another's: an install must not depend on what a dependency happens to pull in today."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = sorted(
    path.parent
    for folder in ("libs", "services", "tools")
    for path in (ROOT / folder).glob("*/pyproject.toml")
)


def _imports(tree: ast.AST) -> Iterator[str]:
    """Top-level names of the absolute imports in `tree`, except those made only for the
    type checker (`if TYPE_CHECKING:`)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from _imports(ast.Module(body=node.orelse, type_ignores=[]))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        else:
            yield from _imports(node)


def _declared(project: Path) -> set[str]:
    """The distributions `project` depends on, its extras' included."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    requirements = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        requirements += extra
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_every_imported_library_is_declared(project: Path) -> None:
    distributions = packages_distributions()
    imported = {
        canonicalize_name(distribution)
        for source in (project / "src").rglob("*.py")
        for name in _imports(ast.parse(source.read_text()))
        if name not in sys.stdlib_module_names and name not in ("m8", "__future__")
        for distribution in distributions.get(name, [name])
    }
    assert sorted(imported - _declared(project)) == []


def test_imports_made_for_the_type_checker_only_are_not_counted() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import a.b\n"
        "if TYPE_CHECKING:\n    import typed_only\n"
        "def f():\n    from c import d\n"
    )
    assert sorted(_imports(tree)) == ["a", "c", "typing"]
