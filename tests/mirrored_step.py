"""Run as a script: one training step and one evaluation of a tiny T5 on one CPU and mirrored over two.

Prints a JSON line: the two losses, the evaluation losses and the largest weight difference after the step.
TensorFlow fixes its logical devices at start, hence a process of its own.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from lora_keras.data.pipeline import TokenizedPairs, make_dataset  # noqa: E402
from lora_keras.adapters import LoraConfig, add_lora  # noqa: E402
from lora_keras.models.token_loss import TokenLossSeq2SeqLM  # noqa: E402


def pairs():
    """8 pairs; the two halves a mirrored step gives its replicas hold very different token counts."""
    rng = np.random.default_rng(0)
    sources, targets = np.zeros((8, 9), np.int32), np.zeros((8, 8), np.int32)
    for row in range(8):
        length = 8 if row < 4 else 2
        sources[row, :9] = rng.integers(3, 50, 9)
        targets[row, :length] = rng.integers(3, 50, length)
        targets[row, length - 1] = 1
    return TokenizedPairs(sources, targets)


def trained(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.T5Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                               intermediate_dim=32, key_value_dim=8, dropout=0.0)
        add_lora(backbone, LoraConfig(rank=2, targets=("q", "v")), seed=0)
        model = TokenLossSeq2SeqLM(backbone=backbone, preprocessor=None)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
    evaluated = model.evaluate(make_dataset(pairs(), 8), verbose=0)
    history = model.fit(make_dataset(pairs(), 8), epochs=1, verbose=0)
    weights = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    return evaluated, history.history["loss"][0], weights


one = trained(tf.distribute.OneDeviceStrategy("/cpu:0"))
two = trained(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({
    "eval": [one[0], two[0]],
    "train": [one[1], two[1]],
    "max_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(one[2], two[2])),
    "max_weight_change": max(float(np.abs(a).max()) for a in one[2][1::2]),
}))
