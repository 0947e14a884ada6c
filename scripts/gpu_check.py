"""GPU check: float32 vs mixed_bfloat16 throughput and peak memory, a short 3 x 3 study, and the PEFT peer beside them.

    python scripts/gpu_check.py --out gpu_check.json             # on one GPU: under 8 minutes
    KERAS_BACKEND=jax python scripts/gpu_check.py --out c.json    # where there is no TensorFlow (JAX)
    python scripts/gpu_check.py --quick --out /tmp/c.json         # a tiny model on CPU, to try it

Everything runs on a random-weight checkpoint of flan-t5-small's shape made on the spot (vocabulary
32,128, 8+8 layers, 6 heads, d_model 512, d_ff 1024, d_kv 64, gated GELU, untied head; dropout 0.1);
nothing is downloaded. Sections, each in its own process so a failure leaves the others' figures:

* `throughput`: ours (this package's trial path: `LoraT5HyperModel` + the measurement callbacks), one
  process per precision, LoRA rank 4 on q,v (alpha 4), Adam 1e-3, XLA on, random token ids with no
  padding (`--length` source and target tokens), batch sizes 8, 64, 128 in increasing order, two
  epochs each (the first compiles the batch's shape; `tokens_per_s` is the second epoch's real tokens
  per second). `peak_memory_mb` is the GPU allocator's peak: on TensorFlow reset per batch size; on
  JAX, whose peak cannot be reset, the process's peak so far (`memory_kind` says which), which for
  batches run in increasing order is the batch's own as long as memory grows with the batch.
* `peer`: `scripts/peft_peer.py` (transformers + PEFT on PyTorch) on the same shape, data sizes,
  rank, optimizer and batch sizes, float32 and bfloat16 autocast, peak = `torch.cuda.max_memory_allocated`
  reset per batch size.
* `study`: ranks 1, 4, 16 x batch sizes 8, 64, 128, one short epoch each, in mixed_bfloat16 with
  XLA (batches padded to the set's longest pair, so each trial's one train shape compiles before its
  clock; XLA's GEMM autotuning off to shorten the compiles), on demo-corpus sentence pairs tokenized
  by a SentencePiece vocabulary trained on the spot; one TensorBoard HParams session per trial under
  `--tensorboard`. It runs until `--deadline-s`; `peak_memory_mb` there is the process's peak so far
  on JAX.

The results go to one JSON file (`--out`), rewritten after every section, and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout too

FLAN_T5_SMALL = dict(
    vocabulary_size=32128, num_layers=8, num_heads=6, hidden_dim=512, intermediate_dim=1024, key_value_dim=64,
    dropout=0.1, activation="gelu", use_gated_activation=True, tie_embedding_weights=False,
)
QUICK = dict(FLAN_T5_SMALL, vocabulary_size=512, num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
             key_value_dim=16)
PRECISIONS = ("float32", "mixed_bfloat16")
RANK = 4
LEARNING_RATE = 1e-3


def sizes(quick: bool) -> dict:
    """The check's sizes: full (one GPU, minutes) or quick (a tiny model on CPU)."""
    if quick:
        return dict(shape=QUICK, batches=(8, 16), length=16, examples=64, ranks=(1, 4), study_batches=(8, 16),
                    study_train=64, study_val=16)
    return dict(shape=FLAN_T5_SMALL, batches=(8, 64, 128), length=64, examples=2048, ranks=(1, 4, 16),
                study_batches=(8, 64, 128), study_train=1024, study_val=128)


# ---- children: each section's own process -------------------------------------------------------------


def random_base(shape: dict, tokenizer=None, seed: int = 0):
    """A `BaseModel` of `shape` with random weights (made here, nothing downloaded)."""
    import keras
    import keras_hub

    from lora_keras.models.base import BaseModel

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.T5Backbone(**shape)
    return BaseModel("random " + ("flan-t5-small shape" if shape == FLAN_T5_SMALL else "tiny"),
                     backbone.get_config(), backbone.get_weights(), tokenizer)


def random_tokens(count: int, length: int, vocabulary: int, seed: int):
    """`TokenizedPairs` of random ids in [2, vocabulary): every position a real token, as the peer's data."""
    import numpy as np

    from lora_keras.data.pipeline import TokenizedPairs

    rng = np.random.default_rng(seed)
    ids = lambda: rng.integers(2, vocabulary, (count, length), dtype=np.int32)  # noqa: E731
    return TokenizedPairs(ids(), ids())


def child_throughput(args: argparse.Namespace) -> None:
    """One precision, the batch sizes in increasing order; a `RESULT {json}` line per batch size."""
    from lora_keras.backends.memory import enable_memory_growth

    enable_memory_growth()
    import keras

    from tuners.hypermodel import LoraT5HyperModel
    from tuners.search_space import SearchSpace
    from tuners.single_trial import run_trial

    plan = sizes(args.quick)
    shape = plan["shape"]
    base = random_base(shape)
    train = random_tokens(plan["examples"], plan["length"], shape["vocabulary_size"], seed=1)
    val = random_tokens(64, plan["length"], shape["vocabulary_size"], seed=2)
    space = SearchSpace(ranks=(RANK,), batch_sizes=tuple(plan["batches"]), learning_rates=(LEARNING_RATE,))
    hypermodel = LoraT5HyperModel(base, space, epochs=2, jit_compile=True, precision=args.point)
    for batch in sorted(plan["batches"]):
        started = time.perf_counter()
        figures = run_trial(hypermodel, {"rank": RANK, "batch_size": batch, "learning_rate": LEARNING_RATE},
                            train, val, pathlib.Path(args.tensorboard) / f"throughput_{args.point}_b{batch}")
        figures.update(backend=keras.backend.backend(), wall_s=time.perf_counter() - started,
                       tokens_per_epoch=train.token_count)
        print("RESULT " + json.dumps(figures), flush=True)


def child_study(args: argparse.Namespace) -> None:
    """Ranks x batch sizes, one short epoch each, until `--deadline-s`; a `RESULT {json}` line per trial."""
    from lora_keras.backends.memory import enable_memory_growth

    enable_memory_growth()
    import keras
    import keras_hub

    from lora_keras.data.pipeline import tokenize_pairs
    from lora_keras.models.demo import corpus as demo_corpus
    from lora_keras.models.tokenizer import train_sentencepiece
    from tuners.hypermodel import LoraT5HyperModel
    from tuners.search_space import SearchSpace
    from tuners.single_trial import run_trial

    deadline = time.monotonic() + args.deadline_s
    plan = sizes(args.quick)
    prefix = "translate English to Dravic: "
    pairs = demo_corpus.generate_pairs("Dravic", plan["study_train"] + plan["study_val"], seed=1)
    vocabulary = min(8000, plan["shape"]["vocabulary_size"])
    tokenizer = keras_hub.models.T5Tokenizer(
        proto=train_sentencepiece([prefix + s for s, _ in pairs] + [t for _, t in pairs], vocabulary))
    base = random_base(plan["shape"], tokenizer)
    train = tokenize_pairs(tokenizer, pairs[: plan["study_train"]], prefix)
    val = tokenize_pairs(tokenizer, pairs[plan["study_train"]:], prefix)
    space = SearchSpace(ranks=tuple(plan["ranks"]), batch_sizes=tuple(plan["study_batches"]),
                        learning_rates=(3e-3,))
    hypermodel = LoraT5HyperModel(base, space, epochs=1, jit_compile=True, precision=args.point)
    # One short epoch per trial: every batch padded to the set's width, so the one train shape per batch
    # size is compiled while tracing, before the trial's clock (buckets of 16 would compile inside it).
    hypermodel.length_multiple = max(train.source_ids.shape[1], train.target_ids.shape[1],
                                     val.source_ids.shape[1], val.target_ids.shape[1])
    trial = 0
    for rank in plan["ranks"]:
        for batch in plan["study_batches"]:
            if time.monotonic() > deadline:
                print("STOPPED deadline", flush=True)
                return
            started = time.perf_counter()
            figures = run_trial(hypermodel, {"rank": rank, "batch_size": batch, "learning_rate": 3e-3},
                                train, val, pathlib.Path(args.tensorboard) / f"trial_{trial}")
            figures.update(trial_id=trial, backend=keras.backend.backend(), wall_s=time.perf_counter() - started)
            print("RESULT " + json.dumps(figures), flush=True)
            trial += 1


# ---- the parent: runs the sections, writes the JSON, prints the table ----------------------------------


def run_child(command: list[str], timeout_s: float, env: dict | None = None) -> dict:
    """Run a section's process; its `RESULT` lines (those printed before a timeout too), exit status, output tail."""
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout_s, 1), cwd=ROOT,
                              env={**os.environ, **(env or {})})
        out, err, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        decode = lambda b: b.decode() if isinstance(b, bytes) else (b or "")  # noqa: E731
        out, err, code = decode(expired.stdout), decode(expired.stderr), "timeout"
    results = [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
    sys.stderr.write(err[-3000:] if code != 0 else "")
    return {"results": results, "exit": code, "seconds": round(time.monotonic() - started, 1),
            "tail": (out + err)[-1500:] if code != 0 else ""}


def environment() -> dict:
    """Versions, the GPU (`nvidia-smi`), the Keras backend; imports nothing heavy here."""
    env = {"python": platform.python_version(), "machine": platform.machine(),
           "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        env["gpu"] = smi.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["gpu"] = None
    from importlib import metadata

    for package in ("keras", "keras-hub", "keras-tuner", "jax", "jaxlib", "tensorflow", "torch", "transformers", "peft"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = None
    return env


def peer_command(plan: dict, bf16: bool) -> list[str]:
    shape = plan["shape"]
    command = [
        sys.executable, str(ROOT / "scripts" / "peft_peer.py"), "--device", "cuda" if _cuda() else "cpu",
        "--rank", str(RANK), "--lr", str(LEARNING_RATE), "--batch", *map(str, plan["batches"]),
        "--n", str(plan["examples"]), "--enc-len", str(plan["length"]), "--dec-len", str(plan["length"]),
        "--vocab", str(shape["vocabulary_size"]), "--d-model", str(shape["hidden_dim"]),
        "--d-kv", str(shape["key_value_dim"]), "--d-ff", str(shape["intermediate_dim"]),
        "--layers", str(shape["num_layers"]), "--dec-layers", str(shape["num_layers"]),
        "--heads", str(shape["num_heads"]), "--dropout", str(shape["dropout"]),
    ]
    return command + (["--bf16"] if bf16 else [])


def _cuda() -> bool:
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0 if _has("nvidia-smi") else False


def _has(program: str) -> bool:
    return any((pathlib.Path(d) / program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def table(report: dict) -> str:
    """The throughput table (ours and the peer's per precision and batch size) and the study's rows."""
    lines = ["| who | precision | batch | tokens/s | peak memory (MiB) | memory kind |", "|---|---|---|---|---|---|"]
    for precision, section in report.get("throughput", {}).items():
        for row in section.get("results", []):
            lines.append(f"| ours ({row.get('backend')}) | {precision} | {row['batch_size']} | "
                         f"{row['tokens_per_s']:,.0f} | {row['peak_memory_mb']:,.0f} | {row['memory_kind']} |")
    for precision, section in report.get("peer", {}).items():
        for row in section.get("results", []):
            peak = row.get("peak_memory_mb")
            lines.append(f"| peer (PyTorch {row['device']}) | {precision} | {row['batch']} | {row['tokens_per_s']:,.0f} | "
                         f"{'' if peak is None else f'{peak:,.0f}'} | {'gpu' if peak is not None else ''} |")
    study = report.get("study", {}).get("results", [])
    if study:
        lines += ["", "| rank | batch | val loss (per real token) | epoch time (s) | tokens/s | peak memory (MiB) |",
                  "|---|---|---|---|---|---|"]
        for row in study:
            lines.append(f"| {row['rank']} | {row['batch_size']} | {row['val_loss']:.4f} | "
                         f"{row['mean_epoch_time_s']:.2f} | {row['tokens_per_s']:,.0f} | {row['peak_memory_mb']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file written")
    parser.add_argument("--tensorboard", default="gpu_check_tensorboard", help="TensorBoard sessions of the trials")
    parser.add_argument("--quick", action="store_true", help="a tiny model and few examples (CPU, to try it)")
    parser.add_argument("--deadline-s", type=float, default=450.0, help="the whole check's time limit")
    parser.add_argument("--section-s", type=float, default=150.0,
                        help="the most one throughput process may take (the peer's: half), so later sections run")
    parser.add_argument("--sections", nargs="+", default=["throughput", "peer", "study"],
                        choices=["throughput", "peer", "study"])
    parser.add_argument("--point", help=argparse.SUPPRESS)  # a child's precision
    parser.add_argument("--child", choices=["throughput", "study"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "throughput":
        return child_throughput(args)
    if args.child == "study":
        return child_study(args)

    deadline = time.monotonic() + args.deadline_s
    plan = sizes(args.quick)
    report = {"env": environment(), "plan": {k: v for k, v in plan.items()}, "rank": RANK,
              "learning_rate": LEARNING_RATE}
    out = pathlib.Path(args.out)
    save = lambda: out.write_text(json.dumps(report, indent=1, default=str))  # noqa: E731
    print(json.dumps(report["env"]), flush=True)
    save()
    me = [sys.executable, str(pathlib.Path(__file__).resolve()), "--tensorboard", args.tensorboard,
          *(["--quick"] if args.quick else [])]
    if "throughput" in args.sections:
        report["throughput"] = {}
        for precision in PRECISIONS:
            report["throughput"][precision] = run_child(
                me + ["--child", "throughput", "--point", precision], min(args.section_s, deadline - time.monotonic()))
            save()
    if "peer" in args.sections:
        report["peer"] = {}
        for precision, bf16 in (("float32", False), ("bfloat16 autocast", True)):
            report["peer"][precision] = run_child(peer_command(plan, bf16),
                                                  min(args.section_s / 2, deadline - time.monotonic()))
            save()
    if "study" in args.sections:
        left = deadline - time.monotonic()
        # XLA's GEMM autotuning lengthens every compile, and the study compiles once per trial and shape:
        # its times are the study's own comparison, made under one setting; the throughput section keeps it.
        report["study"] = run_child(me + ["--child", "study", "--point", "mixed_bfloat16",
                                          "--deadline-s", str(max(left - 45, 1))], left,
                                    env={"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_autotune_level=0")
                                         .strip()})
        report["study"]["xla_flags"] = "--xla_gpu_autotune_level=0"
        save()
    print(table(report), flush=True)


if __name__ == "__main__":
    main()
