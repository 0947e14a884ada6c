"""Measure LoRA training throughput: tokens/s, model-FLOP utilisation, per-trial overhead, peak memory.

    python scripts/bench.py --preset reference --rank 4 --batch-size 64
    python scripts/bench.py --preset demo --vs-peer        # the Hugging Face + PEFT peer in the same run

The last line is always `tokens_per_s=<f> mfu=<f> overhead_s=<f> peak_memory_mb=<f>` (ours).
MFU is achieved training GFLOP/s over the best float32 matmul rate measured in this run.
"""

import os
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lora_keras.cli import (  # noqa: E402
    OneLineErrorParser,
    exit_on_input_error,
    positive_int,
)
from lora_keras.runtime.gpu_probe import load_backend_quietly  # noqa: E402
from lora_keras.errors import InputError  # noqa: E402

DEFAULT_PEER_SCRIPT = ROOT.parent / "shared" / "bench" / "peft_peer.py"


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="bench.py", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--preset", choices=["reference", "demo"], default="reference",
        help="reference: the peer's T5 on random 32+32 tokens; demo: the offline demo model and corpus")
    add("--rank", type=positive_int, default=4, help="LoRA rank")
    add("--batch-size", type=positive_int, default=64, help="batch size")
    add("--steps", type=positive_int, help="timed training steps; default: one epoch (1,024 examples on reference)")
    add("--shape", nargs="+", metavar="KEY=VALUE", default=[],
        help="reference preset only: change its T5Backbone shape, e.g. num_layers=8 hidden_dim=512")
    add("--examples", type=positive_int, default=1024, help="reference preset only: training examples")
    add("--repeats", type=positive_int, default=1, help="measure this many times (alternating with the peer); medians")
    add("--jit-compile", action="store_true", help="compile the train step with XLA")
    add("--vs-peer", action="store_true", help="also run the Hugging Face + PEFT peer and print the ratio")
    add("--peer-python", default=os.environ.get("LORA_KERAS_PEER_PYTHON", "python"),
        help="Python with torch, transformers and peft for --vs-peer (env LORA_KERAS_PEER_PYTHON)")
    add("--peer-script", default=str(DEFAULT_PEER_SCRIPT), help="the peer benchmark script")
    add("--seed", type=int, default=0, help="weights and data")
    return parser


def _workload(args):
    """(base, train tokens, val tokens) of the preset."""
    from lora_keras.runtime import benchmark

    if args.preset == "reference":
        base = benchmark.reference_base(args.seed, **_shape(args.shape))
        vocabulary_size = base.backbone_config["vocabulary_size"]
        train = benchmark.reference_tokens(args.examples, vocabulary_size=vocabulary_size, seed=args.seed)
        val = benchmark.reference_tokens(
            max(1, args.examples // 4), vocabulary_size=vocabulary_size, seed=args.seed + 1
        )
        return base, train, val
    if args.shape:
        raise InputError("--shape changes the reference preset only; drop it or use --preset reference")
    from lora_keras.models.demo import base as demo
    from lora_keras.data.pipeline import tokenize_pairs
    from lora_keras.models.sources import load_base

    base = load_base("tiny", verbose=1)
    prefix = demo.prefix(base.task["target_lang"]) if base.task else ""
    train = tokenize_pairs(base.tokenizer, demo.adaptation_pairs("train", demo.TRAIN_EXAMPLES, args.seed), prefix)
    val = tokenize_pairs(base.tokenizer, demo.adaptation_pairs("val", demo.VAL_EXAMPLES, args.seed), prefix)
    return base, train, val


def _shape(items):
    """`{"num_layers": 8, ...}` from `["num_layers=8", ...]`, checked against the reference's keys."""
    from lora_keras.runtime.benchmark import reference_backbone_config

    known = reference_backbone_config()
    shape = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in known or not value:
            raise InputError(
                f"--shape {item}: expected KEY=VALUE with KEY one of {' '.join(sorted(known))}"
            )
        kind = type(known[key])
        try:
            shape[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise InputError(f"--shape {item}: {key} needs a {kind.__name__}") from None
    return shape


def _median(values):
    return statistics.median(values) if values else float("nan")


def _trial_runner(args, base, train, val):
    """`run(cold)`: one trial through the sweep's hypermodel; `cold` drops the kept model first."""
    import keras_tuner

    from lora_keras.runtime import benchmark
    from lora_keras.data.pipeline import make_dataset
    from tuners.hypermodel import EVAL_BATCH_SIZE, LoraT5HyperModel, SearchSpace

    learning_rate = benchmark.REFERENCE_LEARNING_RATE if args.preset == "reference" else SearchSpace.learning_rates[0]
    space = SearchSpace(ranks=(args.rank,), batch_sizes=(args.batch_size,), learning_rates=(learning_rate,))
    hypermodel = LoraT5HyperModel(base, space, seed=args.seed, jit_compile=args.jit_compile)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    val_texts = None
    if base.tokenizer is not None:  # the demo: the sweep also decodes the validation set for BLEU
        from lora_keras.models.demo import base as demo
        from lora_keras.evaluation import ValidationTexts

        pairs = demo.adaptation_pairs("val", demo.VAL_EXAMPLES, args.seed)
        prefix = demo.prefix(base.task["target_lang"])
        val_texts = ValidationTexts([prefix + s for s, _ in pairs], [t for _, t in pairs])

    def evaluate(model):
        model.evaluate(make_dataset(val, EVAL_BATCH_SIZE), verbose=0)
        if val_texts is not None:
            val_texts.scores(model.backbone, base.tokenizer)

    def run(cold):
        if cold:
            hypermodel.release()
        return benchmark.benchmark_training(
            lambda: hypermodel.build(hp), base.backbone_config, train, args.batch_size, args.steps,
            evaluate, args.seed,
        )

    return run


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.vs_peer and not pathlib.Path(args.peer_script).is_file():
        with exit_on_input_error("bench.py"):
            raise InputError(f"--peer-script {args.peer_script} does not exist; pass the path of peft_peer.py")
    load_backend_quietly("keras")  # TensorFlow's start-up notices and, without a GPU driver, its cuInit errors
    with exit_on_input_error("bench.py"):
        from lora_keras.runtime import benchmark
        from lora_keras.adapters import LoraConfig, check_rank

        base, train, val = _workload(args)
        check_rank(base.build_backbone(), LoraConfig(args.rank))
    peak = benchmark.matmul_peak_gflops()
    source_length, target_length = benchmark.mean_lengths(train)
    steps = args.steps or -(-len(train) // args.batch_size)
    run_trial = _trial_runner(args, base, train, val)
    cold, warm, peers = [], [], []
    for _ in range(args.repeats):
        for kind, results in (("first trial", cold), ("next trial, same LoRA config", warm)):
            results.append(run_trial(cold=results is cold))
            print(f"ours, {kind}: {results[-1].tokens_per_s:.0f} tokens/s, epoch {results[-1].epoch_s:.2f} s, "
                  f"overhead {results[-1].overhead_s:.1f} s", flush=True)
        if args.vs_peer:
            peer_args = benchmark.peer_arguments(
                base.backbone_config, args.rank, args.batch_size, steps * args.batch_size,
                source_length, target_length,
            )
            peers.append(benchmark.run_peer(args.peer_python, args.peer_script, peer_args + ["--seed", str(args.seed)]))
            print(f"peer: {peers[-1]['tokens_per_s']:.0f} tokens/s, epoch {peers[-1]['epoch_s']:.2f} s", flush=True)

    ours = cold + warm
    # After the trials, so its tensors do not count in their peak memory.
    ceiling = benchmark.matmul_ceiling(base.backbone_config, args.batch_size, source_length, target_length)
    tokens_per_s = _median([r.tokens_per_s for r in ours])
    gflops = _median([r.achieved_gflops for r in ours])
    memory_mb = max(r.peak_memory_mb for r in ours)
    print(f"\n{args.preset} rank {args.rank} batch {args.batch_size}, {steps} steps, "
          f"{source_length:.1f}+{target_length:.1f} tokens/example, matmul peak {peak:.1f} GFLOP/s"
          f"{', XLA' if args.jit_compile else ''}")
    print("| | tokens/s | GFLOP/s | MFU | overhead (s): build / trace / eval | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for label, results in (("lora-keras, first trial", cold), ("lora-keras, next trial (model reused)", warm)):
        print(f"| {label} | {_median([r.tokens_per_s for r in results]):.0f} | "
              f"{_median([r.achieved_gflops for r in results]):.1f} | "
              f"{_median([r.achieved_gflops for r in results]) / peak:.1%} | "
              f"{_median([r.overhead_s for r in results]):.1f}: {_median([r.build_s for r in results]):.1f} / "
              f"{_median([r.trace_s for r in results]):.1f} / {_median([r.eval_s for r in results]):.1f} | "
              f"{max(r.peak_memory_mb for r in results):.0f} |")
    step_s = _median([r.epoch_s / r.steps for r in ours])
    print(f"matmul ceiling: this step's matmuls alone, each at its best isolated rate, take "
          f"{ceiling.seconds * 1e3:.0f} ms ({ceiling.gflops:.1f} GFLOP/s, at most {ceiling.gflops / peak:.1%} MFU; "
          f"per-head attention products {ceiling.attention_seconds / ceiling.seconds:.0%} of that time); "
          f"our step takes {step_s * 1e3:.0f} ms")
    if peers:
        peer_tokens = _median([p["tokens_per_s"] for p in peers])
        peer_gflops = _median([p["achieved_gflops"] for p in peers])
        peer_trace = _median([p["warmup_epoch_s"] - p["epoch_s"] for p in peers])
        peer_memory = max(p["peak_rss_mib"] for p in peers)
        print(f"| peer (transformers + PEFT) | {peer_tokens:.0f} | {peer_gflops:.1f} | {peer_gflops / peak:.1%} | "
              f"{peer_trace:.1f}: - / {peer_trace:.1f} / - | {peer_memory:.0f} |")
        print(f"ratio (ours / peer): tokens/s {tokens_per_s / peer_tokens:.2f}x, "
              f"peak memory {memory_mb / peer_memory:.2f}x")
    print(f"tokens_per_s={tokens_per_s:.1f} mfu={gflops / peak:.4f} "
          f"overhead_s={_median([r.overhead_s for r in cold]):.2f} peak_memory_mb={memory_mb:.1f}")


if __name__ == "__main__":
    main()
