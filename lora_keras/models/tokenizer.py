"""SentencePiece vocabularies for T5 (pad 0, eos 1, unk 2) and keras-hub's `T5Tokenizer`.

Example:
```python
proto = train_sentencepiece(["the cat .", "le chat ."], vocab_size=40)
tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
check_vocabulary_fits(tokenizer, 64, "model my-preset", "model")   # every id has an embedding row
```
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sentencepiece

from lora_keras.errors import InputError

if TYPE_CHECKING:
    import keras_hub


def train_sentencepiece(texts: Iterable[str], vocab_size: int) -> bytes:
    """A serialized unigram SentencePiece model (at most `vocab_size` pieces) laid out as T5 expects.

    Args:
        texts: the sentences to learn the pieces from.
        vocab_size: the most pieces; a small corpus gets fewer.

    Returns:
        The model's bytes, with pad 0, eos 1 and unk 2.

    Example:
    ```python
    keras_hub.models.T5Tokenizer(proto=train_sentencepiece(["the cat ."], vocab_size=40))
    ```
    """
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        hard_vocab_limit=False,  # a small corpus gets a smaller vocabulary, not an error
        num_threads=1,  # one thread: the same corpus gives the same vocabulary
        minloglevel=2,
    )
    return model.getvalue()


def check_vocabulary_fits(
    tokenizer: keras_hub.models.T5Tokenizer, rows: int, where: str, parameter: str | None = None
) -> None:
    """Raise `InputError` unless every id of `tokenizer` has one of the model's `rows` embedding rows.

    More rows than pieces is fine (FLAN-T5: 32,128 rows for 32,000 pieces and 100 sentinels);
    fewer is a tokenizer from another model, whose ids past the rows have no embedding.

    Args:
        tokenizer: the tokenizer.
        rows: the model's embedding rows (`vocabulary_size`).
        where: what the message starts with, e.g. `"model path/to/dir"`.
        parameter: the argument at fault, for `InputError.parameter`.

    Example:
    ```python
    check_vocabulary_fits(base.tokenizer, base.backbone_config["vocabulary_size"], "model x", "model")
    ```
    """
    pieces = tokenizer.vocabulary_size()
    if pieces > rows:
        raise InputError(
            f"{where}: the tokenizer has {pieces} pieces but the model's embedding has {rows} rows, so ids "
            f"{rows} to {pieces - 1} have none; pass the tokenizer the model was trained with",
            parameter=parameter,
        )
