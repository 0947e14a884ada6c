"""The pairs a Keras model trains on, epoch by epoch, through `make_dataset(shuffle=True)`: `RESULT [[ids...], ...]`.

Run under any Keras backend (`KERAS_BACKEND`); `tests/test_jax_backend.py` runs it under two and compares
with `lora_keras.data.pipeline.epoch_order`.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from lora_keras.data.pipeline import TokenizedPairs, make_dataset  # noqa: E402

COUNT, BATCH, EPOCHS, SEED = 24, 8, 3, 5


class Recorder(keras.Model):
    """Records the first source id of every example it is trained on (example i carries i + 3)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.embedding = keras.layers.Embedding(40, 4)
        self.dense = keras.layers.Dense(40)

    def call(self, inputs, training=False):
        return self.dense(self.embedding(inputs["decoder_token_ids"]))

    def train_step(self, *args):
        data = args[-1]  # JAX passes (state, data); the other backends (data,)
        self.seen.extend(int(i) for i in keras.ops.convert_to_numpy(data[0]["encoder_token_ids"])[:, 0])
        return super().train_step(*args)


ids = np.stack([np.arange(3, 3 + COUNT), np.ones(COUNT)], axis=1).astype(np.int32)
model = Recorder()
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
model.fit(make_dataset(TokenizedPairs(ids, ids.copy()), BATCH, shuffle=True, seed=SEED), epochs=EPOCHS, verbose=0,
          shuffle=False)  # the dataset reshuffles itself each epoch, as in `LoraT5HyperModel.fit_group`
print("RESULT " + json.dumps([model.seen[e * COUNT:(e + 1) * COUNT] for e in range(EPOCHS)]))
