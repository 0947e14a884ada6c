"""Tiny random Hugging Face T5 checkpoints, built with transformers on PyTorch, and their reference outputs."""

import json

import numpy as np

# FLAN / T5 v1.1: gated tanh-GELU, untied head, no output scaling.
# Original T5: ReLU, head tied to the embedding, decoder output scaled by d_model^-0.5.
# untied-scaled: what transformers 5 makes of a checkpoint whose config says "tied" but whose
# lm_head differs from the embedding: it unties them and still scales.
VARIANTS = {
    "flan": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "t5": dict(feed_forward_proj="relu"),
    "untied-scaled": dict(feed_forward_proj="gated-gelu"),
}
SIZE = dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, dropout_rate=0.0, decoder_start_token_id=0)


def save_hf_t5(directory, variant, proto, seed=0, weights="safetensors", extra_ids=0, **overrides):
    """Save a random `T5ForConditionalGeneration` of `variant` with SentencePiece `proto`; returns the dir.

    `extra_ids` sentinels `<extra_id_N>` follow the pieces in the tokenizer, as in T5 checkpoints;
    `vocab_size` in `overrides` gives the embedding more rows than the tokenizer has tokens.
    """
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(proto)
    tokenizer_config = {"tokenizer_class": "T5Tokenizer", "extra_ids": extra_ids}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    tokenizer = transformers.T5Tokenizer.from_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))  # tokenizer.json as transformers writes it
    config = transformers.T5Config(**{"vocab_size": len(tokenizer), **SIZE, **VARIANTS[variant], **overrides})
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config).eval()
    if variant != "t5":
        # transformers 5 ties lm_head to shared whatever the config says; untie it for real.
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.5)
    model.save_pretrained(str(directory))
    if weights == "bin":  # as older checkpoints ship: a pickled state dict, tied copies included
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
        (directory / "model.safetensors").unlink()
    return directory


def load_reference(directory):
    """transformers' own model from `directory`, asserting it has the head `directory` was saved with."""
    import transformers

    model = transformers.T5ForConditionalGeneration.from_pretrained(str(directory)).eval()
    return model


def reference_logits(model, source_ids, source_mask, decoder_ids):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(source_ids), attention_mask=torch.tensor(source_mask),
                    decoder_input_ids=torch.tensor(decoder_ids))
    return out.logits.numpy()


def reference_greedy(model, source_ids, source_mask, max_new_tokens):
    """transformers' greedy ids after the start token, cut after the first EOS."""
    import torch

    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(source_ids), attention_mask=torch.tensor(source_mask),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return [cut_at_eos(row[1:]) for row in out.numpy().tolist()]


def cut_at_eos(ids, eos=1):
    ids = list(ids)
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def model_inputs(tokenizer, sources, decoder_length=7, seed=0):
    """Padded source ids and mask (rows of different lengths) and random decoder ids starting at 0."""
    rows = [list(np.asarray(tokenizer(text))) + [1] for text in sources]
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int32)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
    rng = np.random.default_rng(seed)
    decoder = rng.integers(3, tokenizer.vocabulary_size(), (len(rows), decoder_length)).astype(np.int32)
    decoder[:, 0] = 0
    return ids, (ids != 0).astype(np.int32), decoder


def with_sentinels(proto, count):
    """SentencePiece `proto` with `count` sentinels `<extra_id_N>` appended as pieces, as T5 tokenizers have them."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    model = model_pb2.ModelProto.FromString(proto)
    for number in reversed(range(count)):  # <extra_id_0> is the last id, as in T5
        model.pieces.add(piece=f"<extra_id_{number}>", score=0.0, type=model_pb2.ModelProto.SentencePiece.USER_DEFINED)
    return model.SerializeToString()
