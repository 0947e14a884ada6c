"""SentencePiece vocabularies for T5 (pad 0, eos 1, unk 2) and keras-hub's `T5Tokenizer`.

Example:
```python
proto = train_sentencepiece(["the cat .", "le chat ."], vocab_size=40)
tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
```
"""

import io

import sentencepiece


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
