"""Tokenizer files of a Hugging Face checkpoint that are missing, unreadable or not T5's: one-line refusals.

(Token ids equal to transformers': `test_hf_checkpoint.py`.)
"""

import json
import shutil

import pytest
from conftest import require
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from lora_keras.cli import flag_message
from lora_keras.errors import InputError
from lora_keras.models.sources import load_base

require("torch")


def swapped_pad_and_eos(directory):
    model = model_pb2.ModelProto.FromString((directory / "spiece.model").read_bytes())
    model.pieces[0].piece, model.pieces[1].piece = model.pieces[1].piece, model.pieces[0].piece
    (directory / "spiece.model").write_bytes(model.SerializeToString())


def json_with(change):
    def write(directory):
        (directory / "spiece.model").unlink()
        spec = json.loads((directory / "tokenizer.json").read_text())
        change(spec)
        (directory / "tokenizer.json").write_text(json.dumps(spec))

    return write


def no_tokenizer(directory):
    (directory / "spiece.model").unlink()
    (directory / "tokenizer.json").unlink()


def not_json(directory):
    (directory / "spiece.model").unlink()
    (directory / "tokenizer.json").write_text('{"model": {"type": "Unigram", ')


@pytest.mark.parametrize(
    "breaking, message",
    [
        (no_tokenizer, "--model {d}: no tokenizer (spiece.model or tokenizer.json); copy the checkpoint's tokenizer "
                       "files into that directory"),
        (lambda d: (d / "spiece.model").write_bytes(b"not a model"),
         "--model {d}: spiece.model is not a SentencePiece model; copy the checkpoint's own spiece.model"),
        (swapped_pad_and_eos, "--model {d}: the tokenizer's first pieces are </s> <pad> <unk>, T5 needs <pad> </s> "
                              "<unk> (pad 0, eos 1, unk 2); pass a T5 checkpoint"),
        (json_with(lambda spec: spec["model"].update(type="BPE")),
         "--model: {d}/tokenizer.json holds a BPE tokenizer, not T5's Unigram; add the checkpoint's spiece.model"),
        (json_with(lambda spec: spec["model"].pop("vocab")),
         "--model: {d}/tokenizer.json holds a Unigram tokenizer with no vocab; add the checkpoint's spiece.model"),
        (not_json, "--model: {d}/tokenizer.json is not JSON (Expecting property name enclosed in double quotes: "
                   "line 1 column 31 (char 30)); copy the checkpoint's own tokenizer.json, or add its spiece.model"),
    ],
    ids=["none", "spiece-unreadable", "spiece-not-t5", "json-bpe", "json-no-vocab", "json-unreadable"],
)
def test_tokenizer_files_that_are_not_t5s_are_refused(hf_t5, tmp_path, breaking, message):
    directory = tmp_path / "checkpoint"
    shutil.copytree(hf_t5("flan"), directory)
    breaking(directory)
    with pytest.raises(InputError) as caught:
        load_base(str(directory))
    # The library names its parameter, `model`; a script's line names the flag, `--model`.
    assert caught.value.parameter == "model" and str(caught.value).startswith("model")
    assert flag_message(caught.value).startswith(message.format(d=directory)), str(caught.value)
    assert "\n" not in str(caught.value)
