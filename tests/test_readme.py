"""README's Python API example runs as written: train and evaluate on text, generate, save, load into a fresh
backbone, merge."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    """The first ```python block under README's "## The Python API" heading."""
    text = README.read_text()
    section = text[text.index("## The Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's Python API section has no ```python block"
    return match.group(1)


def test_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes adapter.safetensors where it runs
    namespace = {"__name__": "readme_example"}
    exec(compile(python_api_example(), str(README), "exec"), namespace)

    from lora_keras.adapters import read_adapter

    adapter = tmp_path / "adapter.safetensors"
    assert adapter.is_file()
    config, loaded = namespace["config"], namespace["loaded"]
    assert loaded == config and loaded.rank == 4  # the example's config, read back from the file
    _, arrays = read_adapter(adapter)
    lora_b = [array for name, array in arrays.items() if name.endswith("lora_b")]
    assert lora_b and all(array.shape[0] == config.rank for array in lora_b)
    assert any(np.abs(array).max() > 0 for array in lora_b)  # the fit trained: B left zero
    assert namespace["val_loss"] > 0  # the loss per real target token, from text
    translation = namespace["translation"]
    assert isinstance(translation, str) and translation.strip()
    assert namespace["merged"] == translation  # the merged base decodes as the adapted one
