"""Merge an adapter into its base (exactly) and export: Hugging Face checkpoint and keras-hub preset."""

import json

import numpy as np
import pytest
from conftest import require, run_main
from hf_models import load_reference, model_inputs, reference_logits
from test_hf_checkpoint import SENTENCES, SOURCES, keras_logits

from lora_keras.cli import flag_message
from lora_keras.errors import InputError
from lora_keras.models.export import export, export_hf, export_keras_hub, merged_backbone
from lora_keras.models.hf.checkpoint import load_hf_checkpoint
from lora_keras.adapters import LoraConfig, add_lora, save_adapter
from lora_keras.adapters.lora import all_projections
from lora_keras.models.sources import load_base, load_preset

require("torch")

# The merged kernels W + s·A·B against the adapted layers' x·W + s·(x·A)·B: float32 rounding apart, relative to
# the largest logit.
MERGE_RTOL = 1e-5


@pytest.fixture(scope="module")
def trained(hf_t5, tmp_path_factory):
    """A FLAN base, an adapter on every projection with B moved off zero, its logits, and the merge."""
    base = load_hf_checkpoint(hf_t5("flan"))
    inputs = model_inputs(base.tokenizer, SOURCES)
    backbone = base.build_backbone()
    layers = add_lora(backbone, LoraConfig(rank=4, alpha=8, targets=("q", "k", "v", "o", "wi", "wo")), seed=0)
    unadapted = keras_logits(backbone, *inputs)  # B = 0: still the base
    rng = np.random.default_rng(0)
    for layer in layers.values():  # as if trained: B != 0
        layer.lora_b.assign(rng.normal(0, 0.05, layer.lora_b.shape).astype("float32"))
    adapter = tmp_path_factory.mktemp("adapter") / "adapter.safetensors"
    save_adapter(backbone, adapter)
    adapted = keras_logits(backbone, *inputs)
    return base, inputs, unadapted, adapted, merged_backbone(base, adapter)


def test_merged_model_equals_adapted_model(trained):
    _, inputs, unadapted, adapted, merged = trained
    # A plain T5Backbone: no LoraDense, not even a plain one, and no LoRA weight.
    assert not all_projections(merged) and not any("lora" in w.path for w in merged.weights)
    difference = float(np.abs(keras_logits(merged, *inputs) - adapted).max())
    print(f"\nmerged vs adapted: max abs logit difference {difference:.3g} (logits up to {np.abs(adapted).max():.3g})")
    assert difference <= MERGE_RTOL * np.abs(adapted).max()  # W + s·A·B computes what x·W + s·(x·A)·B does
    assert np.abs(unadapted - adapted).max() > 0.1  # and the adapter does change the model


def test_hf_export_loads_in_transformers_with_our_logits(trained, tmp_path):
    import transformers

    base, inputs, _, adapted, merged = trained
    directory = export_hf(merged, base.tokenizer, tmp_path / "hf")
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "spiece.model", "tokenizer.json", "tokenizer_config.json"} <= names
    reference = load_reference(directory)
    assert reference.lm_head.weight.data_ptr() != reference.shared.weight.data_ptr()
    assert not reference.config.scale_decoder_outputs and reference.config.dense_act_fn == "gelu_new"
    difference = float(np.abs(reference_logits(reference, *inputs) - adapted).max())
    print(f"\nexported FLAN + adapter, transformers vs ours: max abs logit difference {difference:.3g} "
          f"(logits up to {np.abs(adapted).max():.3g})")
    assert difference < 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    ids = tokenizer(SENTENCES, add_special_tokens=False)["input_ids"]
    assert ids == [list(np.asarray(base.tokenizer(text))) for text in SENTENCES]
    # The export is itself a checkpoint lora-keras reads.
    again = load_base(str(directory))
    np.testing.assert_allclose(keras_logits(again.build_backbone(), *inputs), adapted, atol=1e-5)


@pytest.mark.parametrize("source", ["t5", "tiny_preset"])
def test_hf_export_of_tied_and_exact_gelu_bases(source, hf_t5, tiny_preset, tmp_path):
    """The original-T5 layout (tied, scaled head, ReLU) and the demo's (untied, gated exact GELU)."""
    base = load_hf_checkpoint(hf_t5("t5")) if source == "t5" else load_preset(tiny_preset)
    backbone = base.build_backbone()
    directory = export_hf(backbone, base.tokenizer, tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    reference = load_reference(directory)
    assert reference.config.dense_act_fn == {"t5": "relu", "tiny_preset": "gelu"}[source] == config["dense_act_fn"]
    tied = reference.lm_head.weight.data_ptr() == reference.shared.weight.data_ptr()
    assert tied == (source == "t5") == reference.config.scale_decoder_outputs
    inputs = model_inputs(base.tokenizer, SOURCES)
    difference = float(np.abs(reference_logits(reference, *inputs) - keras_logits(backbone, *inputs)).max())
    print(f"\nexported {source}, transformers vs ours: max abs logit difference {difference:.3g}")
    assert difference < 1e-4


def test_keras_hub_preset_round_trip(trained, tmp_path):
    base, inputs, _, adapted, merged = trained
    directory = export_keras_hub(merged, base.tokenizer, tmp_path / "preset")
    assert (directory / "metadata.json").is_file()
    again = load_base(str(directory))
    assert again.backbone_config == merged.get_config()
    assert again.tokenizer.get_vocabulary() == base.tokenizer.get_vocabulary()
    logits = keras_logits(again.build_backbone(), *inputs)
    np.testing.assert_array_equal(logits, keras_logits(merged, *inputs))  # the merged weights, bit for bit
    assert np.abs(logits - adapted).max() <= MERGE_RTOL * np.abs(adapted).max()


def test_export_refuses_a_non_empty_directory_and_unknown_formats(trained, tmp_path):
    base = trained[0]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(InputError, match="^directory .* exists and is not an empty directory") as caught:
        export(base, tmp_path / "taken")
    # export.py names the flag instead: its `--out` is export's `directory`.
    assert flag_message(caught.value, {"directory": "--out"}) == (
        f"--out {tmp_path / 'taken'} exists and is not an empty directory; pass a new directory")
    with pytest.raises(InputError, match="^format onnx: choose from hf keras-hub") as caught:
        export(base, tmp_path / "new", format="onnx")
    assert flag_message(caught.value) == "--format onnx: choose from hf keras-hub"


def test_export_script_names_its_flags(tmp_path):
    """export.py tells the library's `directory` error as its `--out` flag, in one line, exit status 2."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    code, _, stderr = run_main("export.py", "--model", "tiny", "--out", tmp_path / "taken")
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr == f"export.py: error: --out {tmp_path / 'taken'} exists and is not an empty directory; pass a new directory\n"
