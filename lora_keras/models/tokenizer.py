"""SentencePiece vocabularies for T5 (pad 0, eos 1, unk 2) and keras-hub's `T5Tokenizer`.

Example:
```python
proto = train_sentencepiece(["the cat .", "le chat ."], vocab_size=40)
tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
check_vocabulary_fits(tokenizer, 64, "--model my-preset")   # every id has an embedding row
```
"""

import io

import sentencepiece

from lora_keras.errors import InputError


def train_sentencepiece(texts, vocab_size):
    """A serialized unigram SentencePiece model (at most `vocab_size` pieces) laid out as T5 expects."""
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


def check_vocabulary_fits(tokenizer, rows, where):
    """`InputError` unless every id of `tokenizer` has one of the model's `rows` embedding rows.

    More rows than pieces is fine (FLAN-T5: 32,128 rows for 32,000 pieces and 100 sentinels);
    fewer is a tokenizer from another model, whose ids past the rows have no embedding.
    Example: `check_vocabulary_fits(base.tokenizer, base.backbone_config["vocabulary_size"], "--model x")`.
    """
    pieces = tokenizer.vocabulary_size()
    if pieces > rows:
        raise InputError(
            f"{where}: the tokenizer has {pieces} pieces but the model's embedding has {rows} rows, so ids "
            f"{rows} to {pieces - 1} have none; pass the tokenizer the model was trained with"
        )
