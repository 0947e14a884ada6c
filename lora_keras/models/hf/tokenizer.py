"""T5 tokenizers of Hugging Face checkpoints as keras-hub `T5Tokenizer`s, and back.

A checkpoint's `spiece.model` is read as is. A checkpoint with only `tokenizer.json`
(a `tokenizers` Unigram model) is turned back into the SentencePiece model it came from:
same pieces, scores and normalization, T5's sentinels `<extra_id_N>` as user-defined pieces.

Example:
```python
tokenizer = read_tokenizer("path/to/flan-t5-small")      # keras_hub.models.T5Tokenizer
write_tokenizer_files(tokenizer.proto, "export_dir", extra_ids=100)
```
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
from typing import TYPE_CHECKING

from lora_keras.errors import InputError

if TYPE_CHECKING:
    import keras_hub

SPIECE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
SENTINEL = re.compile(r"<extra_id_\d+>")
T5_SPECIAL_PIECES = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as keras-hub's T5Tokenizer expects


def read_tokenizer(path: str | os.PathLike, parameter: str = "model") -> keras_hub.models.T5Tokenizer:
    """A keras-hub `T5Tokenizer` from a checkpoint dir's `spiece.model` or `tokenizer.json`.

    Args:
        path: the checkpoint directory.
        parameter: the argument `path` came from, named in an `InputError`.

    Returns:
        The tokenizer; an `InputError` when there is none, or it is no T5 tokenizer.

    Example:
    ```python
    tokenizer = read_tokenizer("path/to/flan-t5-small")
    ```
    """
    import keras_hub  # heavy: TensorFlow, imported only when a tokenizer is read

    path = pathlib.Path(path)
    if (path / SPIECE).is_file():
        proto = (path / SPIECE).read_bytes()
    elif (path / TOKENIZER_JSON).is_file():
        proto = proto_from_tokenizer_json(path / TOKENIZER_JSON, parameter)
    else:
        raise InputError(
            f"{parameter} {path}: no tokenizer ({SPIECE} or {TOKENIZER_JSON}); "
            "copy the checkpoint's tokenizer files into that directory",
            parameter=parameter,
        )
    _check_special_pieces(proto, path, parameter)
    return keras_hub.models.T5Tokenizer(proto=proto)


def _check_special_pieces(proto: bytes, path: pathlib.Path, parameter: str) -> None:
    import sentencepiece  # heavy: the SentencePiece runtime, loaded only to check a tokenizer

    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    except RuntimeError:  # only spiece.model can be unreadable: a proto made from tokenizer.json parses
        raise InputError(
            f"{parameter} {path}: {SPIECE} is not a SentencePiece model; copy the checkpoint's own {SPIECE}, "
            f"or remove it to use {TOKENIZER_JSON}",
            parameter=parameter,
        ) from None
    found = tuple(processor.id_to_piece(i) for i in range(min(3, processor.get_piece_size())))
    if found != T5_SPECIAL_PIECES:
        raise InputError(
            f"{parameter} {path}: the tokenizer's first pieces are {' '.join(found)}, T5 needs "
            f"{' '.join(T5_SPECIAL_PIECES)} (pad 0, eos 1, unk 2); pass a T5 checkpoint",
            parameter=parameter,
        )


def proto_from_tokenizer_json(path: str | os.PathLike, parameter: str = "model") -> bytes:
    """The serialized SentencePiece model behind a T5 `tokenizer.json` (Unigram).

    Args:
        path: the `tokenizer.json` file.
        parameter: the argument `path` came from, named in an `InputError`.

    Returns:
        The SentencePiece model's bytes: same pieces, scores and normalization.

    Example:
    ```python
    keras_hub.models.T5Tokenizer(proto=proto_from_tokenizer_json("flan-t5-small/tokenizer.json"))
    ```
    """
    from sentencepiece import sentencepiece_model_pb2 as model_pb2  # heavy: protobuf, only for tokenizer.json

    try:
        spec = json.loads(pathlib.Path(path).read_bytes())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(
            f"{parameter}: {path} is not JSON ({str(error).splitlines()[0]}); "
            f"copy the checkpoint's own {TOKENIZER_JSON}, or add its {SPIECE}",
            parameter=parameter,
        ) from None
    model = spec.get("model") if isinstance(spec, dict) else None
    model = model if isinstance(model, dict) else {}
    kind = model.get("type")
    if kind != "Unigram" or not model.get("vocab"):
        what = f"a {kind} tokenizer, not T5's Unigram" if kind != "Unigram" else "a Unigram tokenizer with no vocab"
        raise InputError(f"{parameter}: {path} holds {what}; add the checkpoint's {SPIECE}", parameter=parameter)
    pieces = model_pb2.ModelProto.SentencePiece
    proto = model_pb2.ModelProto()
    unk_id = model.get("unk_id", 2)
    for index, (piece, score) in enumerate(model["vocab"]):
        if index == unk_id:
            kind = pieces.UNKNOWN
        elif piece in T5_SPECIAL_PIECES:
            kind = pieces.CONTROL
        elif SENTINEL.fullmatch(piece):
            kind = pieces.USER_DEFINED  # matched whole, as transformers treats added tokens
        else:
            kind = pieces.NORMAL
        proto.pieces.add(piece=piece, score=score, type=kind)
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(model["vocab"])
    proto.trainer_spec.unk_id, proto.trainer_spec.eos_id = unk_id, 1
    proto.trainer_spec.pad_id, proto.trainer_spec.bos_id = 0, -1
    charsmap = _precompiled_charsmap(spec.get("normalizer"))
    normalizer = proto.normalizer_spec
    normalizer.name = "nmt_nfkc" if charsmap else "identity"
    normalizer.precompiled_charsmap = charsmap
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = True
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def _precompiled_charsmap(normalizer: dict | None) -> bytes:
    """The SentencePiece normalization table kept in a `tokenizers` normalizer, else b""."""
    if not normalizer:
        return b""
    if normalizer.get("type") == "Precompiled":
        return base64.b64decode(normalizer.get("precompiled_charsmap") or "")
    for inner in normalizer.get("normalizers", ()):
        found = _precompiled_charsmap(inner)
        if found:
            return found
    return b""


def write_tokenizer_files(proto: bytes, directory: str | os.PathLike, extra_ids: int) -> None:
    """Write `spiece.model` and transformers' own tokenizer files (`tokenizer.json`, config).

    Args:
        proto: the SentencePiece model's bytes.
        directory: where to write; created if missing.
        extra_ids: how many sentinels `<extra_id_N>` follow the pieces, as in T5 checkpoints.

    Example:
    ```python
    write_tokenizer_files(tokenizer.proto, "out", extra_ids=100)
    ```
    """
    import transformers  # heavy: transformers, only to write its tokenizer files on export

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPIECE).write_bytes(proto)
    config = {
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": extra_ids,
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": 512,
    }
    config_file = directory / "tokenizer_config.json"
    config_file.write_text(json.dumps(config, indent=2))
    # transformers converts spiece.model into tokenizer.json itself; its own tokenizer_config.json
    # (transformers 5: "extra_special_tokens": []) trips transformers 4, so ours stays.
    transformers.T5Tokenizer.from_pretrained(str(directory)).save_pretrained(str(directory))
    config_file.write_text(json.dumps(config, indent=2))
