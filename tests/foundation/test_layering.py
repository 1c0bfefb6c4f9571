"""The layering of docs/design.md, read from the source: `heartbeat` uses `issues` uses
`paperclip`, never the other way round. Models may name a model of any app by string (a foreign
key); code never imports upwards, and reaches a model of an app above its own through
`apps.get_model` only at the places listed below, each with the reason it must stay."""

from __future__ import annotations

import ast
import functools
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lowest first: an app may import itself and the apps before it.
LAYERS = ("paperclip", "issues", "heartbeat")

# The project's composition root lives in the paperclip package beside the core app: the
# settings, the root URLconf and the server entry points mount every app, so they may import any.
COMPOSITION_ROOT = {
    "paperclip/settings.py",
    "paperclip/urls.py",
    "paperclip/wsgi.py",
    "paperclip/asgi.py",
}

# (module, function) -> how many `get_model` calls it makes. Every entry reaches a model of an
# app above its own, which no import may do.
GET_MODEL_ALLOWED = {
    # The company and activity pages link to the agents, runs and issues of heartbeat and issues.
    ("paperclip/admin/core.py", "CompanyAdmin.links"): 3,
    ("paperclip/admin/core.py", "ActivityLogAdmin.entity"): 1,
    ("paperclip/admin/core.py", "ActivityLogAdmin.run_link"): 1,
    # "Stranded" is an issue with no queued or running run and no pending wakeup: heartbeat's
    # tables, read by the issue QuerySet that the changelist's filter and the dashboard use.
    ("issues/models.py", "IssueQuerySet.stranded"): 2,
    # The issue pages link to the runs that created and worked on the issue (heartbeat's).
    ("issues/admin.py", "_run_model"): 1,
}


@functools.cache
def _app_modules() -> list[tuple[str, ast.Module]]:
    """(path from the repository root, parsed source) of every module of the three apps but
    their migrations, which use `apps.get_model` as Django intends (historical models)."""
    modules = []
    for app in LAYERS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "migrations" not in relative.parts:
                modules.append((relative.as_posix(), ast.parse(path.read_text(), str(path))))
    return modules


def _imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import, at any depth (also inside functions)."""
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.append((node.lineno, node.module))
    return imported


def _get_model_calls(tree: ast.Module) -> Counter[str]:
    """How many `get_model(...)` calls each function (by qualified name) makes."""
    calls: Counter[str] = Counter()

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = (*scope, child.name)
            elif isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "get_model":
                    calls[".".join(scope) or "<module>"] += 1
            visit(child, inner)

    visit(tree, ())
    return calls


def test_no_app_imports_an_app_above_it():
    upward = []
    for path, tree in _app_modules():
        if path in COMPOSITION_ROOT:
            continue
        rank = LAYERS.index(path.split("/")[0])
        for line, name in _imported_modules(tree):
            top = name.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > rank:
                upward.append(f"{path}:{line} imports {name}")
    assert upward == [], "imports against heartbeat -> issues -> paperclip:\n" + "\n".join(upward)


def test_get_model_is_called_only_where_listed():
    found = {
        (path, function): count
        for path, tree in _app_modules()
        for function, count in _get_model_calls(tree).items()
    }
    unlisted = {place: n for place, n in found.items() if GET_MODEL_ALLOWED.get(place) != n}
    gone = {place: n for place, n in GET_MODEL_ALLOWED.items() if found.get(place) != n}
    assert (unlisted, gone) == ({}, {}), (
        "apps.get_model outside GET_MODEL_ALLOWED (import the model instead when the layering "
        f"allows it): {unlisted}; listed but no longer there (update the list): {gone}"
    )


def test_the_scan_sees_imports_inside_functions_and_get_model_in_methods():
    tree = ast.parse(
        "def f():\n    from heartbeat.models import Agent\n"
        "class A:\n    def g(self):\n        return apps.get_model('heartbeat.Agent')\n"
    )
    assert _imported_modules(tree) == [(2, "heartbeat.models")]
    assert _get_model_calls(tree) == {"A.g": 1}
