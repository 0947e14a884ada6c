#!/usr/bin/env python
"""The whole default study, ours and the transformers + PEFT peer's, side by side on this machine.

Runs `scripts/tune.py` (the default 3x3 study on the demo base) and `benchmarks/peft_study.py`
(the same nine trainings with transformers + PEFT on the demo base exported by
`scripts/export.py --model tiny`, on the same token ids), one after the other (alternating with
`--repeat`), each timed from its command's start to its end, and prints the per-trial table and
both wall times. Whatever demo base `--model tiny` loads is the one both train.

    python benchmarks/study_vs_peer.py [--work DIR] [--repeat N] [--peer-python PY] [-- TUNE_FLAGS...]

Example: `python benchmarks/study_vs_peer.py -- --no-pack` compares the unpacked study.
"""

import argparse
import csv
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def prepare(work: pathlib.Path, python: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The exported demo base and the demo pairs' token ids (as tune.py tokenizes them), made once."""
    hf_dir, tokens = work / "demo-hf", work / "tokens.npz"
    if not (hf_dir / "config.json").is_file():
        subprocess.run([python, str(ROOT / "scripts/export.py"), "--model", "tiny", "--out", str(hf_dir)],
                       check=True, stdout=subprocess.DEVNULL)
    if not tokens.is_file():
        code = (
            "import sys, numpy as np; sys.path.insert(0, sys.argv[1])\n"
            "from tuners.prepare import prepare_run\nfrom tuners.sweep_config import SweepConfig\n"
            "run = prepare_run(SweepConfig(verbose=0))\n"
            "np.savez(sys.argv[2], train_source=run.train_tokens.source_ids, train_target=run.train_tokens.target_ids,"
            " val_source=run.val_tokens.source_ids, val_target=run.val_tokens.target_ids)\n"
        )
        subprocess.run([python, "-c", code, str(ROOT), str(tokens)], check=True)
    return hf_dir, tokens


def run_ours(work: pathlib.Path, name: str, tune_flags: list[str]) -> dict:
    """`scripts/tune.py --quiet` timed from start to end; its rows and results.md's last line."""
    command = [sys.executable, str(ROOT / "scripts/tune.py"), "--quiet", "--logdir", str(work / "logs"),
               "--name", name, "--overwrite", *tune_flags]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    run_dir = work / "logs" / name
    with open(run_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    overhead = (run_dir / "results.md").read_text().strip().splitlines()[-1]
    return {"wall_time_s": wall, "rows": rows, "summary": overhead}


def run_peer(python: str, hf_dir: pathlib.Path, tokens: pathlib.Path) -> dict:
    """`benchmarks/peft_study.py` timed from start to end; its trials."""
    command = [python, str(ROOT / "benchmarks/peft_study.py"), "--model", str(hf_dir), "--tokens", str(tokens)]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    trials = [json.loads(line[6:]) for line in output.splitlines() if line.startswith("TRIAL ")]
    return {"wall_time_s": wall, "trials": trials}


def table(ours: dict, peer: dict) -> str:
    """The per-trial Markdown table of one pair of runs."""
    lines = ["| rank | batch | ours time (s) | ours val loss | pack | peer time (s) | peer val loss |",
             "|---:|---:|---:|---:|---|---:|---:|"]
    peer_trials = {(t["rank"], t["batch_size"]): t for t in peer["trials"]}
    for row in ours["rows"]:
        theirs = peer_trials.get((int(row["rank"]), int(row["batch_size"])), {})
        lines.append(
            f"| {row['rank']} | {row['batch_size']} | {float(row['training_time_s']):.1f} | "
            f"{float(row['val_loss']):.4f} | {row.get('pack_group') or '-'} | "
            f"{theirs.get('training_time_s', float('nan')):.1f} | {theirs.get('val_loss', float('nan')):.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="bench-study", help="directory for the export, tokens and runs")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs, alternating which goes first")
    parser.add_argument("--peer-python", default=sys.executable, help="a Python with torch, transformers, peft")
    parser.add_argument("tune_flags", nargs="*", help="extra flags for tune.py, after --")
    args = parser.parse_args()
    work = pathlib.Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    hf_dir, tokens = prepare(work, sys.executable)
    pairs = []
    for index in range(args.repeat):
        if index % 2 == 0:
            ours, peer = run_ours(work, f"ours{index}", args.tune_flags), run_peer(args.peer_python, hf_dir, tokens)
        else:
            peer, ours = run_peer(args.peer_python, hf_dir, tokens), run_ours(work, f"ours{index}", args.tune_flags)
        pairs.append((ours, peer))
        print(table(ours, peer))
        print(ours["summary"])
        print(f"wall time: ours {ours['wall_time_s']:.1f} s, peer {peer['wall_time_s']:.1f} s, "
              f"ours {peer['wall_time_s'] / ours['wall_time_s']:.2f}x the peer's speed", flush=True)
    ratios = [peer["wall_time_s"] / ours["wall_time_s"] for ours, peer in pairs]
    (work / "study_vs_peer.json").write_text(json.dumps(
        [{"ours_wall_s": o["wall_time_s"], "peer_wall_s": p["wall_time_s"], "peer_trials": p["trials"]}
         for o, p in pairs], indent=2))
    print(f"study_speedup_vs_peer={statistics.median(ratios):.3f} ours_wall_s="
          f"{statistics.median(o['wall_time_s'] for o, _ in pairs):.1f} peer_wall_s="
          f"{statistics.median(p['wall_time_s'] for _, p in pairs):.1f}")


if __name__ == "__main__":
    main()
