"""Run the trial path (`tuners.single_trial.run_trial`) on the Keras backend of the environment; print `RESULT {json}`.

Run by the tests in a subprocess: with `KERAS_BACKEND=jax` and tests/no_tensorflow first on PYTHONPATH
(importing TensorFlow fails, as on GPU machines that have JAX but no TensorFlow) by tests/test_jax_backend.py; on TensorFlow,
with XLA's compile log on (`TF_CPP_VMODULE=device_compiler=1`), by tests/test_xla.py.

    python tests/backend_trial.py TENSORBOARD_DIR [xla eager bf16]
"""

import io
import json
import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from lora_keras.data.pipeline import make_dataset, tokenize_pairs  # noqa: E402
from lora_keras.models.base import BaseModel  # noqa: E402
from lora_keras.models.demo import corpus as demo_corpus  # noqa: E402
from lora_keras.models.tokenizer import train_sentencepiece  # noqa: E402
from lora_keras.runtime.xla import LENGTH_MULTIPLE, bucket_length  # noqa: E402
from tuners.hypermodel import LoraT5HyperModel  # noqa: E402
from tuners.search_space import SearchSpace  # noqa: E402
from tuners.single_trial import run_trial  # noqa: E402

PREFIX = "translate English to Dravic: "


def compiles_of_train_step(run):
    """`run()`'s result and how many times JAX compiled Keras's train step meanwhile (its compile log).

    On TensorFlow the count is None: XLA's compiles are in TensorFlow's own log, read by the caller.
    """
    if keras.backend.backend() != "jax":
        return run(), None
    import jax

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        result = run()
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
        logger.setLevel(level)
    return result, sum(line.startswith("Compiling jit(train_step)") for line in stream.getvalue().splitlines())


def batch_shapes(tokens, batch_size, multiple):
    """The distinct (batch, source, target) shapes of `tokens`' batches, counted here from the ids alone."""
    shapes = set()
    source_lengths = (tokens.source_ids != 0).sum(axis=1)
    target_lengths = (tokens.target_ids != 0).sum(axis=1)
    for start in range(0, len(tokens), batch_size):  # any order: the maximum per batch depends on the order,
        rows = slice(start, start + batch_size)      # so count every bucket pair a batch could take
        shapes.add(len(source_lengths[rows]))
    sources = {bucket_length(int(n), multiple, tokens.source_ids.shape[1]) for n in source_lengths}
    targets = {bucket_length(int(n), multiple, tokens.target_ids.shape[1]) for n in target_lengths}
    return len(shapes) * len(sources) * len(targets)


def main(tensorboard, runs):
    pairs = demo_corpus.generate_pairs("Dravic", 200, seed=1)
    tokenizer = keras_hub.models.T5Tokenizer(
        proto=train_sentencepiece([PREFIX + s for s, _ in pairs] + [t for _, t in pairs], 300))
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.T5Backbone(
        vocabulary_size=300, num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64, key_value_dim=16,
        dropout=0.0, activation="gelu", use_gated_activation=True, tie_embedding_weights=False)
    base = BaseModel("tiny", backbone.get_config(), backbone.get_weights(), tokenizer)
    # Few steps and lengths up to 32 (at most 2 x 2 padded shapes): JAX without jit dispatches op by op.
    train = tokenize_pairs(tokenizer, pairs[:64], PREFIX, 32, 32)
    val = tokenize_pairs(tokenizer, pairs[184:], PREFIX, 32, 32)
    space = SearchSpace(ranks=(4,), batch_sizes=(8,))
    values = {"rank": 4, "batch_size": 8, "learning_rate": 3e-3}
    report = {"shapes_bound": batch_shapes(train, 8, LENGTH_MULTIPLE), "train": train.token_count}
    report["exact_shapes"] = len({(tuple(b[0]["encoder_token_ids"].shape), tuple(b[0]["decoder_token_ids"].shape))
                                  for b in make_dataset(train, 8)})
    configs = {"xla": ("float32", True), "eager": ("float32", False), "bf16": ("mixed_bfloat16", True)}
    for name in runs:
        precision, jit = configs[name]
        hypermodel = LoraT5HyperModel(base, space, epochs=2, precision=precision, jit_compile=jit)
        figures, compiles = compiles_of_train_step(
            lambda: run_trial(hypermodel, values, train, val, pathlib.Path(tensorboard) / name))
        report[name] = {**figures, "train_step_compiles": compiles}
        hypermodel.release()
    report["tensorflow_loaded"] = "tensorflow" in sys.modules
    report["backend"] = keras.backend.backend()
    print("RESULT " + json.dumps(report, default=float))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["xla", "eager", "bf16"])
