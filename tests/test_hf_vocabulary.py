"""More embedding rows than tokenizer pieces, as in FLAN-T5 (32,128 rows for 32,000 pieces and 100
sentinels): load and translate agree with transformers (tune and export: `test_hf_scripts.py`).
More pieces than rows: refused at load."""

import json
import shutil

import numpy as np
import pytest
import sentencepiece
from conftest import TINY_PREFIX, require
from hf_models import load_reference, model_inputs, reference_logits, with_sentinels
from test_hf_checkpoint import SENTENCES, SOURCES, keras_logits

from lora_keras.errors import InputError
from lora_keras.evaluation import translate
from lora_keras.models.hf.checkpoint import load_hf_checkpoint
from lora_keras.models.hf.tokenizer import read_tokenizer
from lora_keras.models.sources import load_base

torch = require("torch")
transformers = require("transformers")

SENTINELS, ROWS_PAST_PIECES = 100, 128  # hf_t5_wide's layout, FLAN-T5's


def json_only(directory, tmp_path):
    """A copy of `directory`'s tokenizer.json alone: its sentinels become pieces."""
    shutil.copytree(directory, tmp_path / "json_only", ignore=shutil.ignore_patterns("spiece.model", "*.safetensors"))
    return read_tokenizer(tmp_path / "json_only")


def test_load_keeps_every_row_and_gives_transformers_logits(hf_t5_wide, tmp_path):
    directory, pieces = hf_t5_wide
    reference = load_reference(directory)
    original = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert reference.config.vocab_size == pieces + ROWS_PAST_PIECES and len(original) == pieces + SENTINELS
    base = load_hf_checkpoint(directory)
    assert base.backbone_config["vocabulary_size"] == pieces + ROWS_PAST_PIECES
    assert base.tokenizer.vocabulary_size() == pieces  # spiece.model: the pieces, no sentinels
    inputs = model_inputs(base.tokenizer, SOURCES)
    ours = keras_logits(base.build_backbone(), *inputs)
    assert ours.shape[-1] == pieces + ROWS_PAST_PIECES
    assert np.abs(ours - reference_logits(reference, *inputs)).max() < 1e-4

    tokenizer = json_only(directory, tmp_path)
    assert tokenizer.vocabulary_size() == pieces + SENTINELS
    assert tokenizer.id_to_token(pieces) == "<extra_id_99>" and tokenizer.id_to_token(pieces + 99) == "<extra_id_0>"
    expected = original(SENTENCES, add_special_tokens=False)["input_ids"]
    assert [list(np.asarray(tokenizer(text))) for text in SENTENCES] == expected


def test_translate_drops_sentinels_and_padding_rows_as_transformers_does(hf_t5_wide, tmp_path):
    directory, pieces = hf_t5_wide
    sources = SOURCES + [TINY_PREFIX + "we will not sell the house ."]
    reference = transformers.AutoTokenizer.from_pretrained(str(directory))
    batch = reference(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = load_reference(directory).generate(**batch, max_new_tokens=8, do_sample=False, num_beams=1)
    generated = generated.numpy()
    # transformers really generates ordinary pieces, sentinels and padding rows past its tokenizer ...
    assert ((generated > 2) & (generated < pieces)).any()
    assert ((generated >= pieces) & (generated < pieces + SENTINELS)).any() and (generated >= pieces + SENTINELS).any()
    # ... and prints this, once its tokenizer is spared the padding ids it cannot look up.
    expected = [reference.decode([i for i in row if i < len(reference)], skip_special_tokens=True).strip()
                for row in generated.tolist()]
    base = load_hf_checkpoint(directory)
    backbone = base.build_backbone()
    assert translate(backbone, base.tokenizer, sources, max_new_tokens=8) == expected
    # With the sentinels as pieces (tokenizer.json alone), they are still not printed.
    assert translate(backbone, json_only(directory, tmp_path), sources, max_new_tokens=8) == expected


@pytest.mark.parametrize(
    "source",
    [
        "hf",
        "preset",
        "export",
    ],
)
def test_a_tokenizer_with_more_pieces_than_rows_is_refused(source, hf_t5, tiny_preset, tiny_proto, tmp_path):
    """At load (a checkpoint dir or a preset dir with another tokenizer), and at export."""
    import keras_hub

    from lora_keras.models.export import export_hf

    directory = tmp_path / source
    shutil.copytree(hf_t5("flan") if source == "hf" else tiny_preset, directory)
    config = json.loads((directory / "config.json").read_text())
    rows = config["vocab_size"] if source == "hf" else config["config"]["vocabulary_size"]
    wider = with_sentinels(tiny_proto, 28)
    pieces = sentencepiece.SentencePieceProcessor(model_proto=wider).get_piece_size()
    assert pieces > rows
    where = f"model {directory}"
    with pytest.raises(InputError) as caught:
        if source == "export":
            where = f"export to {tmp_path / 'out'}"
            backbone = keras_hub.models.T5Backbone.from_preset(str(directory))
            export_hf(backbone, keras_hub.models.T5Tokenizer(proto=wider), tmp_path / "out")
        else:
            (directory / ("spiece.model" if source == "hf" else "assets/tokenizer/vocabulary.spm")).write_bytes(wider)
            load_base(str(directory))
    assert str(caught.value) == (
        f"{where}: the tokenizer has {pieces} pieces but the model's embedding has {rows} rows, "
        f"so ids {rows} to {pieces - 1} have none; pass the tokenizer the model was trained with")
    assert not (tmp_path / "out").exists()
