"""Sweep LoRA rank x batch size (and more) on a T5 and measure every trial.

    python scripts/tune.py                                    # the 3x3 study on the offline demo
    python scripts/tune.py --model DIR --train train.tsv --val val.tsv \\
        --source-lang English --target-lang French --ranks 1 4 16 --batch-sizes 8 64 128
    tensorboard --logdir logs                                 # HParams view: one row per trial
    python scripts/tune.py --distributed chief --oracle-address 10.0.0.5:8000 ...   # on one machine (private address),
    python scripts/tune.py --distributed worker --oracle-address 10.0.0.5:8000 ...  # then workers
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import (  # noqa: E402
    OneLineErrorParser,
    dropout_probability,
    exit_on_input_error,
    host_port,
    native_stderr_silenced,
    positive_float,
    positive_int,
)
from lora_keras.runtime.gpu_probe import load_backend_quietly  # noqa: E402
from lora_keras.data.corpus import read_pairs  # noqa: E402
from lora_keras.backends.devices import HELP as DEVICES_HELP  # noqa: E402
from lora_keras.runtime.precision import PRECISIONS  # noqa: E402

# The library's parameters whose flag here is not `--parameter` (`lora_keras.cli.flag_message`).
LIBRARY_FLAGS = {"rank": "--ranks", "alpha": "--lora-alpha", "dropout": "--lora-dropouts", "init": "--lora-init",
                 "learning_rate": "--learning-rates", "batch_size": "--batch-sizes"}


def target_sets(tokens: list[str]) -> tuple[tuple[str, ...], ...] | None:
    """The sets of projections `--targets` names: all tokens one set, unless they hold commas.

    Args:
        tokens: the words given to `--targets`.

    Returns:
        The sets, each once however written; `None` for an empty set (`,`), which the caller reports.

    Example: `target_sets(["q", "v"])` -> `(("q", "v"),)`; `target_sets(["q,v", "q,k,v,o"])` -> two sets.
    """
    groups = [token.split(",") for token in tokens] if any("," in t for t in tokens) else [tokens]
    sets = [tuple(dict.fromkeys(name for name in group if name)) for group in groups]
    if not all(sets):
        return None
    unique = {}
    for names in sets:  # q,v and v,q are one set
        unique.setdefault(frozenset(names), names)
    return tuple(unique.values())


def strategy_names() -> str:
    """The strategies --strategy takes, for --help: built-ins, installed plug-ins, module:Class (loads TensorFlow).

    A strategy module or plug-in that fails to import is named, and breaks no other.

    Example: `strategy_names()` -> `"bayesian, cost_aware, grid, hyperband, random; or module.path:OracleClass
    (a keras_tuner.Oracle subclass on the Python path)"`.
    """
    with native_stderr_silenced():
        from tuners.strategies import choices
    return choices().replace("%", "%%")  # argparse formats help with %


def build_parser(strategies: str = "a built-in, an installed plug-in or module.path:OracleClass "
                 "(--help lists them)") -> OneLineErrorParser:
    """tune.py's argument parser.

    Args:
        strategies: how `--help` lists the strategies (listing them loads TensorFlow).

    Returns:
        The parser; its errors are one line on stderr and exit status 2.

    Example: `build_parser().parse_args(["--ranks", "4", "16"]).ranks` -> `[4, 16]`.
    """
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
    add("--lora-alpha", type=positive_float, nargs="+",
        help="LoRA alpha(s) to sweep (scale alpha/rank); default: equal to rank")
    add("--targets", nargs="+", default=["q", "v"],
        help="projections to adapt, from q k v o wi wo: 'q v' is one set; to sweep sets, "
             "write each with commas: 'q,v q,k,v,o' (a single projection: 'q,')")
    add("--lora-dropouts", type=dropout_probability, nargs="+", default=[0.0],
        help="LoRA dropout(s) to sweep, on the LoRA branch's input in training; 0 <= p < 1")
    add("--lora-init", choices=("peft", "keras"), default="peft",
        help="how LoRA's A is drawn: peft (PEFT's default, uniform in +-1/sqrt(d_in)) or keras "
             "(Keras's enable_lora, He uniform, +-sqrt(6/d_in)); B starts at zero either way")
    add("--pack", type=positive_int,
        help="the most trials trained together in one step on one frozen base (those sharing batch size, "
             "learning rate and epochs); default: every rank for --strategy grid, else 1")
    add("--no-pack", dest="pack", action="store_const", const=1, help="train one trial at a time (--pack 1)")
    add("--precision", choices=PRECISIONS, default="float32",
        help="training precision: mixed_* compute in 16 bits, weights and optimizer state stay float32")
    add("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
        help="XLA for training, batch lengths padded to multiples of 16 (default: on with a GPU, off on CPU)")
    add("--epochs", type=positive_int, default=2, help="epochs per trial (hyperband: the most a trial gets)")
    add("--strategy", default="grid", help=f"search strategy: {strategies}")
    add("--max-trials", type=positive_int, help="trial budget (default: the number of combinations)")
    add("--logdir", default="logs", help="output root")
    add("--name", default="sweep", help="run name: output goes to LOGDIR/NAME")
    add("--overwrite", action="store_true", help="start again instead of resuming LOGDIR/NAME")
    add("--max-train-examples", type=positive_int, help="cap on training pairs")
    add("--max-val-examples", type=positive_int, help="cap on validation pairs")
    add("--max-source-length", type=positive_int, default=64, help="source tokens kept")
    add("--max-target-length", type=positive_int, default=64, help="target tokens kept")
    add("--seed", type=int, default=0, help="training seed (LoRA initialisation, dropout masks, data order) "
        "and strategy order; the pairs themselves are --data-seed's")
    add("--repeats", type=positive_int, default=1,
        help="train each configuration with this many seeds (--seed, --seed+1, ...) on the same pairs; "
             "results.md and summary.csv then give each configuration's mean, spread and CI")
    add("--data-seed", type=int, default=0,
        help="the demo corpus drawn and the 10%% held out of --train: the pairs every seed trains and validates on")
    add("--memory-budget-mb", type=positive_float, help="recommend the best trial within this peak memory")
    add("--time-budget-s", type=positive_float, help="recommend the best trial within this training time")
    add("--quiet", action="store_true", help="no progress bars")
    add("--devices", help=f"train each trial data-parallel over several devices: {DEVICES_HELP}")
    add("--distributed", choices=("chief", "worker"),
        help="share one run among processes: one chief serves the trials, workers run them")
    add("--oracle-address", type=host_port, help="HOST:PORT the chief listens on and the workers call")
    add("--worker-id", help="a worker's id, distinct per worker; default: worker-<host>-<pid>")
    add("--chief-timeout", type=positive_float, default=300.0,
        help="seconds a worker waits for an unreachable chief before it gives up")
    add("--lease-s", type=positive_float, metavar="SECONDS",
        help="seconds a chief waits to hear from a worker before it takes the worker's trials back (default: 120)")
    add("--allow-public-bind", action="store_true",
        help="let the chief listen on a wildcard (0.0.0.0, ::) or public address; use TLS there")
    add("--tls-cert", metavar="FILE", help="PEM certificate: the chief's server certificate, or a worker's client one")
    add("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    add("--tls-ca", metavar="FILE",
        help="PEM CA: on a worker, verifies the chief's certificate; on the chief, requires client "
             "certificates it signed")
    return parser


def distributed_conflict(args: argparse.Namespace) -> str | None:
    """The first flag that contradicts --distributed, as an argparse error message, or None.

    Example: `distributed_conflict(build_parser().parse_args(["--distributed", "worker"]))`
    -> `"--distributed worker needs --oracle-address HOST:PORT (the chief's)"`.
    """
    tls = (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--tls-ca", args.tls_ca))
    chief_only = (("--lease-s", args.lease_s is not None, "which takes a silent worker's trials back"),
                  ("--allow-public-bind", args.allow_public_bind, "which listens"))
    if args.distributed is None:
        for flag, given in (("--oracle-address", args.oracle_address), ("--worker-id", args.worker_id), *tls):
            if given:
                return f"{flag} needs --distributed chief or --distributed worker"
        for flag, given, _ in chief_only:
            if given:
                return f"{flag} needs --distributed chief"
        return None
    if args.oracle_address is None:
        return f"--distributed {args.distributed} needs --oracle-address HOST:PORT (the chief's)"
    if bool(args.tls_cert) != bool(args.tls_key):
        given, missing = ("--tls-cert", "--tls-key") if args.tls_cert else ("--tls-key", "--tls-cert")
        return f"{given} needs {missing}: a certificate and its private key"
    if args.distributed == "chief":
        for flag, given in (("--worker-id", args.worker_id), ("--devices", args.devices)):
            if given:
                return f"{flag} is for workers; the chief trains nothing"
        if args.tls_ca and not args.tls_cert:
            return "--tls-ca on the chief needs --tls-cert and --tls-key: its own certificate, which workers verify"
    else:
        if args.overwrite:
            return "--overwrite is for the chief only, which owns the run directory"
        for flag, given, why in chief_only:
            if given:
                return f"{flag} is for the chief only, {why}"
    return None


def check_security_flags(args: argparse.Namespace) -> None:
    """Check what the chief listens on and that the TLS files are readable PEM, before TensorFlow loads.

    Example: `check_security_flags(build_parser().parse_args(["--distributed", "chief", "--oracle-address",
    "0.0.0.0:8000"]))` -> `InputError` (`oracle_address`): a wildcard needs `--allow-public-bind`.
    """
    with native_stderr_silenced():  # importing `tuners` may load TensorFlow, which prints start-up notices
        from tuners.oracle_security import check_bind_address

    if args.distributed == "chief":
        check_bind_address(args.oracle_address[0], args.allow_public_bind)
    tls_files(args)


def tls_files(args: argparse.Namespace) -> "TlsFiles | None":
    """The `tuners.oracle_security.TlsFiles` of `--tls-cert`, `--tls-key`, `--tls-ca`, or None without them.

    Example: `tls_files(build_parser().parse_args([]))` -> `None`.
    """
    from tuners.oracle_security import TlsFiles

    if not (args.tls_cert or args.tls_key or args.tls_ca):
        return None
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


def epochs_conflict(args: argparse.Namespace) -> str | None:
    """`--epochs` too few for a strategy that budgets in epochs, as an argparse error message, or None.

    The strategy's own check names its parameter (`max_epochs`); this names the flag. Loads TensorFlow
    and resolves `--strategy` (`InputError` for one that does not resolve: `tuners.strategies.oracle_class`).

    Example: `epochs_conflict(build_parser().parse_args(["--strategy", "hyperband", "--epochs", "1"]))`
    -> `"--strategy hyperband budgets in epochs; pass --epochs 2 or more"`.
    """
    from tuners.strategies import budgets_in_epochs

    if budgets_in_epochs(args.strategy) and args.epochs < 2:
        return f"--strategy {args.strategy} budgets in epochs; pass --epochs 2 or more"
    return None


def sweep_config(args: argparse.Namespace, targets: tuple[tuple[str, ...], ...]) -> "SweepConfig":
    """The `tuners.sweep.SweepConfig` the flags describe (loads TensorFlow).

    Args:
        args: the parsed flags.
        targets: the sets of projections, from `target_sets`.

    Returns:
        The sweep's config; a value given twice to a list flag counts once.

    Example: `sweep_config(build_parser().parse_args([]), (("q", "v"),)).space.ranks` -> `(1, 4, 16)`.
    """
    from tuners.cluster import DEFAULT_LEASE_S, Cluster
    from tuners.search_space import SearchSpace
    from tuners.sweep import SweepConfig

    space = SearchSpace(
        ranks=tuple(dict.fromkeys(args.ranks)),
        batch_sizes=tuple(dict.fromkeys(args.batch_sizes)),
        learning_rates=tuple(dict.fromkeys(args.learning_rates)),
        lora_alphas=tuple(dict.fromkeys(args.lora_alpha or ())),
        target_sets=targets,
        lora_dropouts=tuple(dict.fromkeys(args.lora_dropouts)),
    )
    config = SweepConfig(
        model=args.model, train=args.train, val=args.val, source_lang=args.source_lang,
        target_lang=args.target_lang, prefix=args.prefix, space=space, epochs=args.epochs,
        strategy=args.strategy, max_trials=args.max_trials, logdir=args.logdir, name=args.name,
        overwrite=args.overwrite, max_train_examples=args.max_train_examples,
        max_val_examples=args.max_val_examples, max_source_length=args.max_source_length,
        max_target_length=args.max_target_length, seed=args.seed, repeats=args.repeats,
        data_seed=args.data_seed, lora_init=args.lora_init,
        memory_budget_mb=args.memory_budget_mb, time_budget_s=args.time_budget_s,
        verbose=0 if args.quiet else 1, devices=args.devices, pack=args.pack, precision=args.precision,
        jit_compile=args.jit_compile,
    )
    if args.distributed:
        config.cluster = Cluster(
            args.distributed, *args.oracle_address, args.worker_id, args.chief_timeout, tls=tls_files(args),
            allow_public_bind=args.allow_public_bind, lease_s=args.lease_s or DEFAULT_LEASE_S,
        )
    return config


def main(argv: list[str] | None = None) -> None:
    """Run tune.py with `argv` (default: the command line); exits 2 on bad input, 1 when the sweep stopped.

    Example: `main(["--ranks", "1", "4", "--epochs", "1", "--name", "quick"])`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(strategy_names()) if {"-h", "--help"} & set(argv) else build_parser()
    args = parser.parse_args(argv)
    conflict = distributed_conflict(args)
    if conflict:
        parser.error(conflict)
    targets = target_sets(args.targets)
    if targets is None:
        parser.error("--targets: an empty set; name projections in each, e.g. --targets q,v q,k,v,o")
    with exit_on_input_error("tune.py"):  # a bad corpus file is told in a second, before TensorFlow loads
        for flag, path in (("--train", args.train), ("--val", args.val)):
            if path:
                read_pairs(path, flag)
        check_security_flags(args)
    load_backend_quietly()  # TensorFlow's start-up notices and, without a GPU driver, its cuInit errors: not here
    with exit_on_input_error("tune.py"):  # --strategy that does not resolve, or fails to import: one line
        conflict = epochs_conflict(args)
    if conflict:
        parser.error(conflict)
    with exit_on_input_error("tune.py", flags=LIBRARY_FLAGS):
        from tuners.failures import SweepStopped
        from tuners.sweep import run_sweep

        try:
            run_sweep(sweep_config(args, targets))
        except SweepStopped as error:
            sys.stderr.write(f"tune.py: error: {error}\n")
            sys.exit(1)


if __name__ == "__main__":
    main()
