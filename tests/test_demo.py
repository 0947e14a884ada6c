"""The offline demo: the base is built once, cached by config, and loads as `--model tiny`."""

import json

import pytest

from conftest import run_script
from lora_keras.models.demo import base as demo
from lora_keras.models.sources import load_base

# One layer each side and a few steps: what is under test is the build-once-and-cache path, not quality.
SMALL = demo.DemoConfig(vocabulary_size=300, num_layers=1, hidden_dim=32, intermediate_dim=64, num_heads=2,
                        examples=128, epochs=1, batch_size=32)


def test_demo_base_is_built_once_and_cached(tmp_path, monkeypatch):
    preset = demo.ensure_demo_base(SMALL, tmp_path, verbose=0)
    task = json.loads((preset / demo.TASK_FILE).read_text())
    assert task["target_lang"] == "Dravic" and task["base_lang"] == "Velish"
    assert task["base_val_loss"] > 0
    stamp = (preset / "model.weights.h5").stat().st_mtime_ns
    assert demo.ensure_demo_base(SMALL, tmp_path, verbose=0) == preset
    assert (preset / "model.weights.h5").stat().st_mtime_ns == stamp
    other = demo.DemoConfig(**{**SMALL.__dict__, "seed": 1})
    assert other.key() != SMALL.key()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("demo-base-") and p != preset]

    monkeypatch.setattr(demo, "DemoConfig", lambda: SMALL)
    base = load_base("tiny", cache_root=tmp_path)
    assert base.name == "tiny" and base.task["target_lang"] == "Dravic"
    assert base.backbone_config["hidden_dim"] == 32
    ids = base.tokenizer(["translate English to Dravic: the dog runs ."])
    assert len(ids[0]) > 3


def test_demo_task_pairs_are_deterministic():
    assert demo.adaptation_pairs("val", 5, seed=3) == demo.adaptation_pairs("val", 5, seed=3)
    assert demo.prefix("Dravic") == "translate English to Dravic: "


@pytest.mark.slow
def test_default_study_end_to_end(tmp_path):
    """`python scripts/tune.py` as a user runs it: the 3x3 study on the demo (minutes)."""
    result = run_script("tune.py", "--logdir", tmp_path, "--quiet", timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "sweep" / "results.csv").read_text().splitlines()
    assert len(rows) == 10
    baseline = json.loads((tmp_path / "sweep" / "baseline.json").read_text())
    best = min(float(r.split(",")[11]) for r in rows[1:])
    assert best < baseline["val_loss"] - 1.0  # adaptation clearly beats doing nothing
