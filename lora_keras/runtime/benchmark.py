"""Training throughput of one LoRA configuration: tokens/s, model-FLOP utilisation, overhead, memory.

A trial's time splits into a fixed part (build the model, trace the train and
eval steps, evaluate) and a part that scales with the data (steady-state
training steps). This module measures both, without keras-tuner, for the
reference config of the peer benchmark (`reference_backbone_config`) or any
`BaseModel`, and converts steady-state throughput to achieved GFLOP/s with the
same FLOP count as the peer (`training_flops_per_example`) so the two compare.

Example:
```python
peak = matmul_peak_gflops()
result = benchmark_training(build_model, reference_backbone_config(), reference_tokens(1024), 64)
print(result.tokens_per_s, result.achieved_gflops / peak)
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import subprocess
import time
from collections.abc import Callable
from typing import Any

import keras
import keras_hub
import numpy as np
from keras import ops

from lora_keras.backends.batches import endless_batches
from lora_keras.backends.devices import compiled, sync_devices
from lora_keras.data.pipeline import PAD_ID, TokenizedPairs, make_dataset
from lora_keras.models.base import BaseModel
from lora_keras.models.masking_warning import masking_warning_ignored

REFERENCE_SOURCE_LENGTH = 32
REFERENCE_TARGET_LENGTH = 32
REFERENCE_EXAMPLES = 1024
REFERENCE_LEARNING_RATE = 1e-3  # the peer's Adam learning rate


def reference_backbone_config() -> dict[str, Any]:
    """The peer benchmark's T5 (`../shared/bench/peft_peer.py` defaults) as `T5Backbone` kwargs.

    Example:
    ```python
    keras_hub.models.T5Backbone(**reference_backbone_config())
    ```
    """
    return dict(
        vocabulary_size=8000, num_layers=4, num_heads=4, hidden_dim=256, intermediate_dim=512,
        key_value_dim=64, dropout=0.1, activation="gelu", use_gated_activation=True,
        tie_embedding_weights=False,
    )


def reference_base(seed: int = 0, **overrides: Any) -> BaseModel:
    """A random-weight `BaseModel` of the reference shape (no tokenizer: it trains on ids).

    Args:
        seed: the weights' seed (sets Keras's global seed, as a training run does).
        **overrides: `T5Backbone` arguments that change the reference shape.

    Returns:
        The `BaseModel`, with `tokenizer=None`.

    Example:
    ```python
    base = reference_base(0, num_layers=8)
    ```
    """
    keras.utils.set_random_seed(seed)
    config = {**reference_backbone_config(), **overrides}
    with masking_warning_ignored():
        backbone = keras_hub.models.T5Backbone(**config)
    return BaseModel("reference", backbone.get_config(), backbone.get_weights(), tokenizer=None)


def reference_tokens(
    examples: int,
    source_length: int = REFERENCE_SOURCE_LENGTH,
    target_length: int = REFERENCE_TARGET_LENGTH,
    vocabulary_size: int = 8000,
    seed: int = 0,
) -> TokenizedPairs:
    """Random ids in [2, vocab) with no padding, as the peer draws them.

    Example:
    ```python
    reference_tokens(1024).source_ids.shape   # (1024, 32)
    ```
    """
    rng = np.random.default_rng(seed)
    return TokenizedPairs(
        rng.integers(2, vocabulary_size, (examples, source_length), dtype=np.int32),
        rng.integers(2, vocabulary_size, (examples, target_length), dtype=np.int32),
    )


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 `size`x`size` matmul rate, in GFLOP/s, of the Keras backend and NumPy on this machine.

    Example:
    ```python
    mfu = result.achieved_gflops / matmul_peak_gflops()
    ```
    """
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    backend_product = compiled(lambda x, y: ops.matmul(x, y))
    ta, tb = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    best = math.inf
    for run in (lambda: a @ b, lambda: ops.convert_to_numpy(backend_product(ta, tb))):
        run()
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def training_flops_per_example(backbone_config: dict, source_length: float, target_length: float) -> float:
    """Matmul FLOPs of one training example with a frozen base, counted as the peer counts them.

    Forward: 2 x parameters x the tokens each projection acts on, plus the
    attention score and value products; training = 2 x forward (activation
    gradients only: frozen weights need no weight gradient; LoRA's own are
    negligible).
    """
    d = backbone_config["hidden_dim"]
    heads = backbone_config["num_heads"]
    inner = heads * (backbone_config.get("key_value_dim") or d // heads)
    ff = backbone_config["intermediate_dim"]
    layers = backbone_config["num_layers"]
    ff_params = (3 if backbone_config.get("use_gated_activation", True) else 2) * d * ff
    attention_params = 4 * d * inner
    encoder = layers * (attention_params + ff_params) * source_length
    decoder_self_and_ff = layers * (attention_params + ff_params + 2 * d * inner) * target_length
    cross_key_value = layers * 2 * d * inner * source_length
    head = backbone_config["vocabulary_size"] * d * target_length
    scores = 4 * inner * layers * (
        source_length**2 + target_length**2 + target_length * source_length
    )
    forward = 2 * (encoder + decoder_self_and_ff + cross_key_value + head) + scores
    return 2 * forward


def training_matmuls(
    backbone_config: dict, batch_size: int, source_length: int, target_length: int
) -> dict[tuple[int, int, int, int], int]:
    """The matmuls behind `training_flops_per_example`, as `{(batch, m, k, n): count}` per training step.

    Each projection appears twice, forward `(m, k) @ (k, n)` and its input
    gradient `(m, n) @ (n, k)`; each attention product (batch = examples x
    heads) appears twice in its forward shape, as the peer counts them.
    `sum(count * 2 * batch * m * k * n)` equals the FLOPs of one step.
    """
    d = backbone_config["hidden_dim"]
    heads = backbone_config["num_heads"]
    key_value = backbone_config.get("key_value_dim") or d // heads
    inner = heads * key_value
    ff = backbone_config["intermediate_dim"]
    layers = backbone_config["num_layers"]
    ff_in = 2 if backbone_config.get("use_gated_activation", True) else 1
    source, target = batch_size * source_length, batch_size * target_length
    projections = [  # (tokens, d_in, d_out, how many)
        (source, d, inner, 3 * layers), (source, inner, d, layers),  # encoder attention
        (source, d, ff, ff_in * layers), (source, ff, d, layers),  # encoder feed-forward
        (target, d, inner, 4 * layers), (target, inner, d, 2 * layers),  # decoder: self q, k, v, o; cross q, o
        (source, d, inner, 2 * layers),  # decoder cross-attention k, v (on the encoder's outputs)
        (target, d, ff, ff_in * layers), (target, ff, d, layers),  # decoder feed-forward
        (target, d, backbone_config["vocabulary_size"], 1),  # head
    ]
    matmuls = {}

    def add(shape, count):
        matmuls[shape] = matmuls.get(shape, 0) + count

    for tokens, d_in, d_out, count in projections:
        add((1, tokens, d_in, d_out), count)
        add((1, tokens, d_out, d_in), count)
    for query_length, key_length, count in (
        (source_length, source_length, layers), (target_length, target_length, layers),
        (target_length, source_length, layers),
    ):
        add((batch_size * heads, query_length, key_value, key_length), 2 * count)  # scores
        add((batch_size * heads, query_length, key_length, key_value), 2 * count)  # weighted values
    return matmuls


@dataclasses.dataclass
class MatmulCeiling:
    """How fast one training step could be if everything but its matmuls were free."""

    seconds: float  # the step's matmuls, each at its best isolated rate here
    attention_seconds: float  # of which the batched attention products
    flops: float  # of the step, as `training_flops_per_example` counts them

    @property
    def gflops(self) -> float:
        """The step's FLOPs over `seconds`, in GFLOP/s."""
        return self.flops / self.seconds / 1e9


MATMUL_CEILING_FLOPS_PER_CALL = 5e8


def matmul_ceiling(
    backbone_config: dict, batch_size: int, source_length: int, target_length: int, repeats: int = 5
) -> MatmulCeiling:
    """Time each matmul shape of one training step alone (best of `repeats`) and add them up.

    Small projections and the per-head attention products run far below the
    large square matmul that sets the peak, so this bounds the MFU any
    implementation of the step can reach with the backend's kernels here.

    Example:
    ```python
    matmul_ceiling(reference_backbone_config(), 64, 32, 32).gflops / matmul_peak_gflops()
    ```
    """
    source_length, target_length = round(source_length), round(target_length)
    generator = np.random.default_rng(0)
    seconds = attention_seconds = flops = 0.0
    for (batch, m, k, n), count in training_matmuls(backbone_config, batch_size, source_length,
                                                     target_length).items():
        leading = () if batch == 1 else (batch,)
        product_flops = 2.0 * batch * m * k * n
        # Several products per call, so a small one is not timed as the cost of calling a function;
        # each with its own right operand, so the graph optimizer cannot merge them into one.
        times = max(1, min(64, round(MATMUL_CEILING_FLOPS_PER_CALL / product_flops)))
        a = ops.convert_to_tensor(generator.standard_normal((*leading, m, k), dtype=np.float32))
        rights = [ops.convert_to_tensor(generator.standard_normal((*leading, k, n), dtype=np.float32))
                  for _ in range(times)]
        products = compiled(lambda a=a, rights=rights: sum(ops.matmul(a, b)[..., :1, :1] for b in rights))
        ops.convert_to_numpy(products())
        best = math.inf
        for _ in range(repeats):
            started = time.perf_counter()
            ops.convert_to_numpy(products())
            best = min(best, (time.perf_counter() - started) / times)
        seconds += count * best
        attention_seconds += count * best if batch > 1 else 0.0
        flops += count * product_flops
    return MatmulCeiling(seconds, attention_seconds, flops)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark, in MiB (what the peer reports).

    Read from `VmHWM`, the mark of this process's own memory map: `ru_maxrss` also holds the
    mark of the process that forked it as it was at `exec` (Linux keeps it across exec), so a
    bench started from a large process (a test runner) reported that process's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass
class BenchmarkResult:
    """One measured trial; times in seconds."""

    batch_size: int
    steps: int
    tokens_per_s: float
    achieved_gflops: float
    build_s: float
    trace_s: float
    eval_s: float
    epoch_s: float
    peak_memory_mb: float
    trainable_params: int
    final_loss: float

    @property
    def overhead_s(self) -> float:
        """What a trial pays whatever its length: build, first-step tracing, evaluation."""
        return self.build_s + self.trace_s + self.eval_s


class _EpochClock(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        sync_devices()
        self.seconds.append(time.perf_counter() - self.started)


def benchmark_training(
    build_model: Callable[[], keras.Model],
    backbone_config: dict,
    train_tokens: TokenizedPairs,
    batch_size: int,
    steps: int | None = None,
    evaluate: Callable[[keras.Model], object] | None = None,
    seed: int = 0,
) -> BenchmarkResult:
    """Time one trial: `build_model()`, a warm-up epoch and a timed epoch of `steps` steps, `evaluate(model)`.

    `tokens_per_s` counts the real (non-padding) tokens of the timed epoch;
    `trace_s` is how much longer the warm-up epoch took than the timed one.

    Example:
    ```python
    result = benchmark_training(build, reference_backbone_config(), reference_tokens(1024), 64)
    ```
    """
    steps = steps or math.ceil(len(train_tokens) / batch_size)
    started = time.perf_counter()
    model = build_model()
    build_s = time.perf_counter() - started

    dataset = endless_batches(make_dataset(train_tokens, batch_size, shuffle=True, seed=seed))
    clock = _EpochClock()
    history = model.fit(
        dataset, epochs=2, steps_per_epoch=steps, callbacks=[clock], verbose=0, shuffle=False
    )
    warm_s, epoch_s = clock.seconds

    eval_s = 0.0
    if evaluate is not None:
        started = time.perf_counter()
        evaluate(model)
        eval_s = time.perf_counter() - started
    source_length, target_length = mean_lengths(train_tokens)
    flops = training_flops_per_example(backbone_config, source_length, target_length)
    examples = steps * batch_size
    return BenchmarkResult(
        batch_size=batch_size, steps=steps,
        tokens_per_s=(source_length + target_length) * examples / epoch_s,
        achieved_gflops=flops * examples / epoch_s / 1e9, build_s=build_s,
        trace_s=max(0.0, warm_s - epoch_s), eval_s=eval_s, epoch_s=epoch_s,
        peak_memory_mb=peak_rss_mb(),
        trainable_params=sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        final_loss=float(history.history["loss"][-1]),
    )


def mean_lengths(tokens: TokenizedPairs) -> tuple[float, float]:
    """Mean real (non-padding) source and target lengths; the full widths for unpadded data.

    Example:
    ```python
    mean_lengths(reference_tokens(8))   # (32.0, 32.0)
    ```
    """
    return (float((tokens.source_ids != PAD_ID).sum(axis=1).mean()),
            float((tokens.target_ids != PAD_ID).sum(axis=1).mean()))


def peer_arguments(
    backbone_config: dict, rank: int, batch_size: int, examples: int, source_length: float, target_length: float
) -> list[str]:
    """`peft_peer.py` flags for the same model shape and work as ours.

    Example:
    ```python
    peer_arguments(reference_backbone_config(), 4, 64, 1024, 32, 32)   # ["--rank", "4", "--batch", "64", ...]
    ```
    """
    heads = backbone_config["num_heads"]
    return [
        "--rank", str(rank), "--batch", str(batch_size), "--n", str(examples),
        "--enc-len", str(round(source_length)), "--dec-len", str(round(target_length)),
        "--vocab", str(backbone_config["vocabulary_size"]),
        "--d-model", str(backbone_config["hidden_dim"]),
        "--d-kv", str(backbone_config.get("key_value_dim") or backbone_config["hidden_dim"] // heads),
        "--d-ff", str(backbone_config["intermediate_dim"]),
        "--layers", str(backbone_config["num_layers"]),
        "--dec-layers", str(backbone_config["num_layers"]),
        "--heads", str(heads), "--dropout", str(backbone_config.get("dropout", 0.1)),
    ]


def run_peer(
    python: str | os.PathLike, script: str | os.PathLike, arguments: list[str], timeout_s: float = 1800
) -> dict:
    """Run the Hugging Face + PEFT peer (`peft_peer.py`) and return its `RESULT` dict.

    Example:
    ```python
    run_peer("python", "../shared/bench/peft_peer.py", peer_arguments(...))["tokens_per_s"]
    ```
    """

    # Through a shell that forks it: a child forked straight from this process
    # inherits our RSS high-water mark, and the peer reports ru_maxrss.
    command = ["/bin/sh", "-c", '"$0" "$@"; exit $?', str(python), str(script), *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"the peer exited {completed.returncode} without a RESULT line: {tail[0]}")
