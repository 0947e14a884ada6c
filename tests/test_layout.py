"""The library's layout: no import cycles between its modules, and no global state changed on import."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("lora_keras", "tuners", "callbacks")


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(name, path, modules):
    """Project modules `name` imports anywhere in its file (top level or inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for neighbour in sorted(graph[node]):
            if state.get(neighbour) == "open":
                return stack[stack.index(neighbour):] + [neighbour]
            if neighbour not in state:
                cycle = visit(neighbour, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the library
    assert find_cycle(graph) is None


@pytest.mark.e2e  # a fresh process of its own
def test_importing_the_library_changes_no_global_state():
    """Warning filters and matplotlib's backend are the caller's, whatever module is imported."""
    modules = sorted(name for name in _modules() if not name.startswith("tuners.strategies"))
    code = (
        "import warnings, importlib, matplotlib\n"
        # Third-party imports add their own filters (scipy's, urllib3's through TensorFlow): not ours.
        "import tensorflow, keras_hub, keras_tuner\n"
        "filters, backend = list(warnings.filters), matplotlib.get_backend()\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "assert warnings.filters == filters, [f for f in warnings.filters if f not in filters]\n"
        "assert matplotlib.get_backend() == backend, matplotlib.get_backend()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]
