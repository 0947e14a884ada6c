"""The scripts on Hugging Face checkpoints: tune -> adapter -> export -> transformers; translate; refusals."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import TINY_PREFIX, require, run_main, run_script
from hf_models import load_reference, model_inputs, reference_logits
from test_hf_checkpoint import SENTENCES, SOURCES, keras_logits
from test_tune_errors import assert_one_line_exit_2

from lora_keras.adapters import LoraConfig, add_lora, load_adapter, read_adapter, save_adapter
from lora_keras.models.sources import load_base

require("torch")


@pytest.fixture(scope="module")
def tuned(hf_t5_wide, tiny_corpus, tmp_path_factory):
    """One tiny trial of tune.py on the FLAN-like checkpoint dir with FLAN-T5's rows past the pieces.

    The suite's one Hugging Face run end to end in a process of its own; export and translate run in-process.
    """
    logdir = tmp_path_factory.mktemp("logs")
    train, val = tiny_corpus
    result = run_script(
        "tune.py", "--model", hf_t5_wide[0], "--train", train, "--val", val, "--source-lang", "English",
        "--target-lang", "Dravic", "--ranks", "2", "--batch-sizes", "8", "--epochs", "1",
        "--max-train-examples", "32", "--max-val-examples", "8", "--max-target-length", "16",
        "--logdir", logdir, "--name", "hf", "--quiet",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return logdir / "hf"


@pytest.mark.e2e
def test_tune_runs_a_trial_on_a_hugging_face_checkpoint(tuned):
    with open(tuned / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["COMPLETED"]
    assert np.isfinite(float(rows[0]["val_loss"])) and int(rows[0]["trainable_params"]) > 0
    assert 0 <= float(rows[0]["bleu"]) <= 100  # decoded through generated sentinels and padding rows
    assert np.isfinite(json.loads((tuned / "baseline.json").read_text())["val_loss"])
    (adapter,) = (tuned / "adapters").glob("*.safetensors")
    _, weights = read_adapter(adapter)
    assert any(np.any(value) for name, value in weights.items() if name.endswith("lora_b"))  # B trained


@pytest.fixture(scope="module")
def moved_adapter(hf_t5_wide, tmp_path_factory):
    """An adapter file for the FLAN-like checkpoint whose `B` moved away from zero (as training leaves it)."""
    base = load_base(str(hf_t5_wide[0]))
    backbone = base.build_backbone()
    layers = add_lora(backbone, LoraConfig(rank=2, alpha=4, targets=("q", "v")), seed=0)
    rng = np.random.default_rng(0)
    for layer in layers.values():
        layer.lora_b.assign(rng.normal(0, 0.5, layer.lora_b.shape).astype("float32"))
    path = tmp_path_factory.mktemp("adapter") / "trial_0.safetensors"
    save_adapter(backbone, path)
    return path


def test_export_script_merges_an_adapter_for_transformers(moved_adapter, hf_t5_wide, tmp_path):
    """An adapter (tune.py's, in the e2e run above, has the same format) merged by export.py, read by transformers."""
    import transformers

    directory, pieces = hf_t5_wide
    adapter = moved_adapter
    out = tmp_path / "exported"
    code, _, stderr = run_main("export.py", "--model", directory, "--adapter", adapter, "--out", out)
    assert code == 0, stderr[-3000:]
    _, weights = read_adapter(adapter)
    assert all(np.any(value) for name, value in weights.items() if name.endswith("lora_b"))  # B moved
    base = load_base(str(directory))
    backbone = base.build_backbone()
    load_adapter(backbone, adapter)
    inputs = model_inputs(base.tokenizer, SOURCES)
    ours = keras_logits(backbone, *inputs)
    assert np.abs(ours - keras_logits(base.build_backbone(), *inputs)).max() > 0.1  # the adapter changes the model
    reference = load_reference(out)
    assert reference.config.vocab_size == pieces + 128 == ours.shape[-1]  # every row, as FLAN-T5 ships them
    assert np.abs(reference_logits(reference, *inputs) - ours).max() < 1e-4
    # The sentinels are back after the pieces, where the original tokenizer has them.
    exported = transformers.AutoTokenizer.from_pretrained(str(out))
    original = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert exported.convert_ids_to_tokens(list(range(pieces - 2, pieces + 100))) == original.convert_ids_to_tokens(
        list(range(pieces - 2, pieces + 100)))
    assert len(exported) == len(original) == pieces + 100
    assert exported(SENTENCES)["input_ids"] == original(SENTENCES)["input_ids"]


def test_translate_script_matches_transformers_greedy(hf_t5):
    import torch
    import transformers

    directory = hf_t5("flan")
    lines = [TINY_PREFIX + "the red dog saw a small cat .", TINY_PREFIX + "we will not sell the house ."]
    code, stdout, stderr = run_main("translate.py", "--model", directory, "--max-new-tokens", "8", *lines)
    assert code == 0, stderr[-3000:]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    batch = tokenizer(lines, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = load_reference(directory).generate(**batch, max_new_tokens=8, do_sample=False, num_beams=1)
    expected = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert stdout.splitlines() == expected


def test_what_keras_hub_cannot_represent_exits_2_in_one_line(hf_t5, tmp_path):
    directory = tmp_path / "asymmetric"
    shutil.copytree(hf_t5("flan"), directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "num_decoder_layers": 1}))
    code, _, stderr = run_main("translate.py", "--model", directory, "hello")
    assert_one_line_exit_2(code, stderr, "num_decoder_layers 1 != num_layers 2")
    # The library's `model` error, told as the flag: one line naming --model and the directory.
    assert f"translate.py: error: --model {directory}: num_decoder_layers 1" in stderr


def test_hub_id_offline_exits_2_telling_to_pass_a_directory(tmp_path, monkeypatch):
    import huggingface_hub

    # What HF_HUB_OFFLINE=1 and an empty HF_HOME give a fresh process (read once at import).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, stderr = run_main("translate.py", "--model", "google/flan-t5-small", "hello")
    assert_one_line_exit_2(code, stderr, "cannot download from the Hugging Face hub")
    assert "pass the local directory" in stderr
    assert "translate.py: error: --model google/flan-t5-small: " in stderr
