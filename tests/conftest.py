"""Shared fixtures: a tiny T5 keras-hub preset and tiny TSV corpora, made once per session."""

import os
import pathlib
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_keras import demo_corpus  # noqa: E402

TINY_PREFIX = "translate English to Dravic: "


def tiny_backbone_kwargs(vocabulary_size):
    return dict(
        vocabulary_size=vocabulary_size, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, key_value_dim=16, dropout=0.0, activation="gelu",
        use_gated_activation=True, tie_embedding_weights=False,
    )


def write_tsv(path, pairs, header=True):
    lines = (["source\ttarget"] if header else []) + [f"{s}\t{t}" for s, t in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """`(train.tsv, val.tsv)` of 96 and 24 English->Dravic pairs."""
    directory = tmp_path_factory.mktemp("corpus")
    train = demo_corpus.generate_pairs("Dravic", 96, seed=1)
    val = demo_corpus.generate_pairs("Dravic", 24, seed=1, split="val")
    return write_tsv(directory / "train.tsv", train), write_tsv(directory / "val.tsv", val)


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    """A random-weight tiny T5 saved as a keras-hub preset dir with its SentencePiece vocab."""
    import keras
    import keras_hub

    from lora_keras.tokenizer import train_sentencepiece

    directory = tmp_path_factory.mktemp("tiny_preset")
    pairs = demo_corpus.generate_pairs("Dravic", 400, seed=1)
    texts = [TINY_PREFIX + s for s, _ in pairs] + [t for _, t in pairs]
    tokenizer = keras_hub.models.T5Tokenizer(proto=train_sentencepiece(texts, 300))
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.T5Backbone(**tiny_backbone_kwargs(300))
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


def run_script(script, *args, timeout=600, env=None):
    """Run `scripts/<script>` in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
