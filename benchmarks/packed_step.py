#!/usr/bin/env python
"""Tokens/s of the packed step (several configurations in one step) against one configuration alone.

On the default study's demo base and data: for each batch size, alternating, a few training steps
with one slot in use and with `--slots` in use (ranks 1, 4, 16 by default), on the same batches;
prints the median step times and tokens/s (real source and target tokens of every slot's examples).

    python benchmarks/packed_step.py [--batch-sizes 8 64 128] [--steps 8] [--rounds 3]
"""

import argparse
import os
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64, 128])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of alone and packed")
    args = parser.parse_args()

    import keras_tuner

    from callbacks import StepTimer
    from lora_keras.data.pipeline import make_dataset, repeat_for_slots
    from tuners.hypermodel import LoraT5HyperModel
    from tuners.prepare import prepare_run
    from tuners.search_space import SearchSpace
    from tuners.sweep_config import SweepConfig

    space = SearchSpace(ranks=tuple(args.ranks), batch_sizes=tuple(args.batch_sizes))
    config = SweepConfig(space=space, verbose=0)
    run = prepare_run(config)
    # One model for every rank and batch size (one targets, dropout and init), its steps traced once.
    hypermodel = LoraT5HyperModel(run.base, space, slots=len(args.ranks), lora_init=config.lora_init)
    tokens = run.train_tokens
    first = keras_tuner.HyperParameters()
    space.declare(first)
    model = hypermodel.model_for(hypermodel.lora_config(first))
    hypermodel.trace(model, tokens, run.val_tokens)
    for batch_size in args.batch_sizes:
        hps = []
        for rank in args.ranks:
            hp = keras_tuner.HyperParameters()
            space.declare(hp)
            hp.values.update(rank=rank, batch_size=batch_size)
            hps.append(hp)
        batches = make_dataset(tokens, batch_size, shuffle=True, seed=0).take(args.steps + 1)
        step_tokens = sum(int((x["encoder_padding_mask"].numpy().sum() + x["decoder_padding_mask"].numpy().sum()))
                          for x, _, _ in batches.skip(1))
        times = {1: [], len(hps): []}
        for _ in range(args.rounds):
            for slots in times:
                hypermodel.start(model, hps[:slots])  # the first `slots` ranks, each at its initial adapter
                timer = StepTimer(warmup=1)
                model.fit(repeat_for_slots(batches, slots), epochs=1, verbose=0, shuffle=False, callbacks=[timer])
                times[slots].append(statistics.median(timer.step_times_s))
        alone, packed = (statistics.median(times[s]) for s in times)
        alone_rate = step_tokens / args.steps / alone
        packed_rate = len(hps) * step_tokens / args.steps / packed
        print(f"batch {batch_size}: step alone {alone * 1000:.0f} ms ({alone_rate:.0f} tokens/s), "
              f"{len(hps)} packed {packed * 1000:.0f} ms ({packed_rate:.0f} tokens/s): "
              f"{packed_rate / alone_rate:.2f}x", flush=True)
    hypermodel.release()


if __name__ == "__main__":
    main()
