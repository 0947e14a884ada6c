"""The offline demo base: shipped in the package (checked against its manifest), else built once and cached."""

import json

import h5py
import numpy as np
import pytest

from conftest import run_script
from lora_keras.models.demo import base as demo
from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.models.sources import load_base

# One layer each side and a few steps: what is under test is the build, its files and the cache, not quality.
SMALL = demo.DemoConfig(vocabulary_size=300, num_layers=1, hidden_dim=32, intermediate_dim=64, num_heads=2,
                        examples=24, epochs=1, batch_size=32, quality_examples=8)
SHIPPED_LIMIT_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def small_preset(tmp_path_factory):
    return demo.ensure_demo_base(SMALL, tmp_path_factory.mktemp("cache"), verbose=0)


def test_demo_base_is_built_once_cached_and_reports_quality_per_language(small_preset, monkeypatch):
    task = demo.read_task(small_preset)
    assert task["target_lang"] == "Dravic" and task["base_langs"] == list(demo_corpus.BASE_LANGUAGES)
    assert set(task["quality"]) == set(demo_corpus.LANGUAGES)
    for quality in task["quality"].values():
        assert quality["val_loss_per_token"] > 0 and 0 <= quality["token_accuracy"] <= 1
        assert 0 <= quality["bleu"] <= 100
    stamp = (small_preset / "model.weights.h5").stat().st_mtime_ns
    assert demo.ensure_demo_base(SMALL, small_preset.parent, verbose=0) == small_preset
    assert (small_preset / "model.weights.h5").stat().st_mtime_ns == stamp
    other = demo.DemoConfig(**{**SMALL.__dict__, "seed": 1})
    assert other.key() != SMALL.key()
    assert not [p for p in small_preset.parent.iterdir() if p.name.startswith("demo-base-") and p != small_preset]

    monkeypatch.setattr(demo, "DemoConfig", lambda: SMALL)
    base = load_base("tiny", cache_root=small_preset.parent)
    assert base.name == "tiny" and base.task["target_lang"] == "Dravic"
    assert base.backbone_config["hidden_dim"] == 32
    ids = base.tokenizer(["translate English to Dravic: the dog runs ."])
    assert len(ids[0]) > 3


def _weights(preset):
    with h5py.File(preset / "model.weights.h5", "r") as handle:
        arrays = {}
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.e2e  # a second build (half a minute): CI's e2e run, beside the default one
def test_demo_base_build_is_deterministic(small_preset, tmp_path):
    """The same config builds the same vocabulary, weights and quality (file bytes differ only in the
    save date and in Keras's per-process layer names)."""
    again = demo.build_demo_base(SMALL, tmp_path / "again", verbose=0)
    vocabulary = "assets/tokenizer/vocabulary.spm"
    assert (again / vocabulary).read_bytes() == (small_preset / vocabulary).read_bytes()
    first, second = _weights(small_preset), _weights(again)
    assert len(first) > 20 and first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert demo.read_task(again)["quality"] == demo.read_task(small_preset)["quality"]


def test_shipped_base_matches_its_manifest_and_the_build_config():
    manifest = json.loads((demo.SHIPPED_PRESET / demo.MANIFEST_FILE).read_text())
    assert demo.file_checksums(demo.SHIPPED_PRESET) == manifest["files"]  # no file changed, none missing
    assert manifest["config"] == demo.DemoConfig().__dict__  # what scripts/build_demo_base.py builds
    assert manifest["config_key"] == demo.DemoConfig().key()
    assert (manifest["corpus_version"], manifest["training_version"]) == (demo.CORPUS_VERSION, demo.TRAINING_VERSION)
    assert demo.read_task(demo.SHIPPED_PRESET)["config"] == manifest["config"]
    config = json.loads((demo.SHIPPED_PRESET / "config.json").read_text())["config"]
    built = demo.DemoConfig()
    assert (config["hidden_dim"], config["num_layers"], config["vocabulary_size"]) == (
        built.hidden_dim, built.num_layers, built.vocabulary_size)
    size = sum(path.stat().st_size for path in demo.SHIPPED_PRESET.rglob("*") if path.is_file())
    assert size <= SHIPPED_LIMIT_BYTES


def test_tiny_loads_the_shipped_base_without_training(monkeypatch, tmp_path):
    def no_build(*args, **kwargs):
        raise AssertionError("the shipped demo base should load, not be rebuilt")

    monkeypatch.setattr(demo, "build_demo_base", no_build)
    base = load_base("tiny", cache_root=tmp_path)
    assert base.task["target_lang"] == "Dravic"
    assert not list(tmp_path.iterdir())  # nothing cached: it came from the package
    assert base.backbone_config["hidden_dim"] == demo.DemoConfig().hidden_dim


def test_demo_task_pairs_are_deterministic():
    assert demo.adaptation_pairs("val", 5, seed=3) == demo.adaptation_pairs("val", 5, seed=3)
    assert demo.prefix("Dravic") == "translate English to Dravic: "


@pytest.mark.slow
def test_rebuilt_demo_base_is_as_good_as_the_shipped_one(tmp_path):
    """`scripts/build_demo_base.py --out` from scratch (about 30 minutes): the quality the shipped base records."""
    result = run_script("build_demo_base.py", "--out", tmp_path / "base", "--quiet", timeout=7200)
    assert result.returncode == 0, result.stderr[-3000:]
    rebuilt = demo.read_task(tmp_path / "base")["quality"]
    shipped = demo.read_task(demo.SHIPPED_PRESET)["quality"]
    for language in demo_corpus.BASE_LANGUAGES:
        assert rebuilt[language]["bleu"] >= 60, (language, rebuilt[language])
        assert rebuilt[language]["bleu"] == pytest.approx(shipped[language]["bleu"], abs=3)
        assert rebuilt[language]["token_accuracy"] == pytest.approx(shipped[language]["token_accuracy"], abs=0.01)
    assert rebuilt[demo_corpus.ADAPT_LANGUAGE]["bleu"] <= 5


@pytest.mark.slow
def test_default_study_end_to_end(tmp_path):
    """`python scripts/tune.py` as a user runs it: the 3x3 study on the demo (minutes)."""
    result = run_script("tune.py", "--logdir", tmp_path, "--quiet", timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split(",") for line in (tmp_path / "sweep" / "results.csv").read_text().splitlines()]
    assert len(rows) == 10
    bleu = [float(row[rows[0].index("bleu")]) for row in rows[1:]]
    baseline = json.loads((tmp_path / "sweep" / "baseline.json").read_text())
    assert baseline["bleu"] <= 5 and max(bleu) >= 30  # readable translations after LoRA, none before
    assert "Sample translations" in (tmp_path / "sweep" / "results.md").read_text()
