"""The backend seam (`lora_keras.backends`): only its modules import TensorFlow or JAX."""

import ast

from conftest import ROOT

BACKEND_PACKAGES = {"tensorflow", "tensorflow_text", "jax", "jaxlib", "tf_keras"}
SOURCES = ("lora_keras", "tuners", "callbacks", "scripts", "benchmarks")


def imported_packages(path):
    """The top-level packages `path` imports, anywhere in it (functions included)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_only_the_backend_seam_imports_tensorflow_or_jax():
    seam = ROOT / "lora_keras" / "backends"
    offenders = {}
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            found = BACKEND_PACKAGES & set(imported_packages(path))
            if found and seam not in path.parents:
                offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}


def test_the_seam_itself_is_found_by_the_scan():
    """The scan can fail: the seam's own modules do import the backends."""
    found = set()
    for path in (ROOT / "lora_keras" / "backends").glob("*.py"):
        found |= BACKEND_PACKAGES & set(imported_packages(path))
    assert {"tensorflow", "jax"} <= found
