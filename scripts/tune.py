"""Sweep LoRA rank x batch size (and more) on a T5 and measure every trial.

    python scripts/tune.py                                    # the 3x3 study on the offline demo
    python scripts/tune.py --model DIR --train train.tsv --val val.tsv \\
        --source-lang English --target-lang French --ranks 1 4 16 --batch-sizes 8 64 128
    tensorboard --logdir logs                                 # HParams view: one row per trial
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import (  # noqa: E402
    OneLineErrorParser,
    exit_on_input_error,
    native_stderr_silenced,
    positive_float,
    positive_int,
)


def build_parser():
    parser = OneLineErrorParser(prog="tune.py", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--model", default="tiny", help="'tiny' (offline demo base), a keras-hub T5 preset dir, a Hugging "
        "Face T5 checkpoint dir (config.json, model.safetensors, spiece.model) or a hub id")
    add("--train", help="training pairs: TSV (source<TAB>target), CSV or JSONL; default: the demo corpus")
    add("--val", help="validation pairs, same formats; default: 10%% held out of --train")
    add("--source-lang", help="source language for the task prefix")
    add("--target-lang", help="target language for the task prefix")
    add("--prefix", help="task prefix, instead of 'translate {source} to {target}: '")
    add("--ranks", type=positive_int, nargs="+", default=[1, 4, 16], help="LoRA ranks to sweep")
    add("--batch-sizes", type=positive_int, nargs="+", default=[8, 64, 128], help="batch sizes to sweep")
    add("--learning-rates", type=positive_float, nargs="+", default=[3e-3], help="learning rates to sweep")
    add("--lora-alpha", type=positive_float, help="LoRA alpha (scale alpha/rank); default: equal to rank")
    add("--targets", nargs="+", default=["q", "v"], help="projections to adapt, from q k v o wi wo")
    add("--epochs", type=positive_int, default=2, help="epochs per trial")
    add("--strategy", default="grid", help="search strategy: grid, random, bayesian")
    add("--max-trials", type=positive_int, help="trial budget for non-grid strategies")
    add("--logdir", default="logs", help="output root")
    add("--name", default="sweep", help="run name: output goes to LOGDIR/NAME")
    add("--overwrite", action="store_true", help="start again instead of resuming LOGDIR/NAME")
    add("--max-train-examples", type=positive_int, help="cap on training pairs")
    add("--max-val-examples", type=positive_int, help="cap on validation pairs")
    add("--max-source-length", type=positive_int, default=64, help="source tokens kept")
    add("--max-target-length", type=positive_int, default=64, help="target tokens kept")
    add("--seed", type=int, default=0, help="data order, initialisation and strategy order")
    add("--memory-budget-mb", type=positive_float, help="recommend the best trial within this peak memory")
    add("--time-budget-s", type=positive_float, help="recommend the best trial within this training time")
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    with native_stderr_silenced():
        import keras_hub  # noqa: F401  (loads TensorFlow, which prints start-up notices)
    with exit_on_input_error():
        from tuners.hypermodel import SearchSpace
        from tuners.sweep import SweepConfig, SweepStopped, run_sweep

        space = SearchSpace(
            ranks=tuple(dict.fromkeys(args.ranks)),
            batch_sizes=tuple(dict.fromkeys(args.batch_sizes)),
            learning_rates=tuple(dict.fromkeys(args.learning_rates)),
            lora_alpha=args.lora_alpha,
            targets=tuple(dict.fromkeys(args.targets)),
        )
        config = SweepConfig(
            model=args.model, train=args.train, val=args.val, source_lang=args.source_lang,
            target_lang=args.target_lang, prefix=args.prefix, space=space, epochs=args.epochs,
            strategy=args.strategy, max_trials=args.max_trials, logdir=args.logdir, name=args.name,
            overwrite=args.overwrite, max_train_examples=args.max_train_examples,
            max_val_examples=args.max_val_examples, max_source_length=args.max_source_length,
            max_target_length=args.max_target_length, seed=args.seed,
            memory_budget_mb=args.memory_budget_mb, time_budget_s=args.time_budget_s,
            verbose=0 if args.quiet else 1,
        )
        try:
            run_sweep(config)
        except SweepStopped as error:
            sys.stderr.write(f"tune.py: error: {error}\n")
            sys.exit(1)


if __name__ == "__main__":
    main()
