#!/usr/bin/env python
"""Median training-step time of one LoRA trial model on the Keras backend of the environment.

On the default study's demo base: a rank-4 model, the first batch of the training set (cut to its
longest pair) trained on `--steps` times with `train_on_batch` after one untimed call (its trace
or compile), at each batch size. Run it once per backend to compare them on the same work:

    python benchmarks/backend_step.py                           # TensorFlow, graph
    python benchmarks/backend_step.py --jit-compile             # TensorFlow with XLA
    KERAS_BACKEND=jax python benchmarks/backend_step.py         # JAX (always compiled)
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64, 128])
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per batch size")
    parser.add_argument("--jit-compile", action="store_true", help="XLA on TensorFlow (JAX always compiles)")
    args = parser.parse_args()

    import keras
    import keras_tuner
    import numpy as np

    from lora_keras.data.pipeline import TokenizedPairs
    from tuners.hypermodel import LoraT5HyperModel
    from tuners.prepare import prepare_run
    from tuners.search_space import SearchSpace
    from tuners.sweep_config import SweepConfig

    run = prepare_run(SweepConfig(verbose=0))
    tokens = run.train_tokens
    space = SearchSpace(ranks=(args.rank,), batch_sizes=tuple(args.batch_sizes))
    jit_compile = args.jit_compile or keras.backend.backend() == "jax"
    hypermodel = LoraT5HyperModel(run.base, space, jit_compile=jit_compile)
    for batch_size in args.batch_sizes:
        hp = keras_tuner.HyperParameters()
        space.declare(hp)
        hp.values.update(rank=args.rank, batch_size=batch_size)
        model = hypermodel.build(hp)
        sources, targets = tokens.source_ids[:batch_size], tokens.target_ids[:batch_size]
        source_length, target_length = int((sources != 0).sum(1).max()), int((targets != 0).sum(1).max())
        inputs, labels, weights = TokenizedPairs(sources[:, :source_length], targets[:, :target_length]).model_inputs()
        started = time.perf_counter()
        model.train_on_batch(inputs, labels, sample_weight=weights)
        first_s = time.perf_counter() - started
        times = []
        for _ in range(args.steps):
            started = time.perf_counter()
            loss = model.train_on_batch(inputs, labels, sample_weight=weights)
            float(np.asarray(loss[0] if isinstance(loss, list) else loss))  # waits for the step
            times.append(time.perf_counter() - started)
        print(f"{keras.backend.backend()} jit_compile={jit_compile} batch {batch_size} ({source_length}+"
              f"{target_length} tokens): first call {first_s:.2f} s, median step "
              f"{statistics.median(times) * 1000:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
