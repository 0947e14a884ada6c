"""A synthetic study on disk, as tune.py leaves it: results.csv rows and the trials' per-pair validation files.

No model: each configuration has a true per-token loss and a translation word-error rate; a seed
moves both a little, and each validation pair draws its own NLL and errors around them. The rows'
val loss, BLEU, chrF and their CIs are computed from those files the way the trial runner does.
"""

import json

import numpy as np
import sacrebleu

from lora_keras.results.stats import translation_intervals, val_loss_interval
from lora_keras.results.rows import read_results_csv, typed_rows, write_results_csv

WORDS = [f"w{i}" for i in range(40)]


def references(pairs, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(4, 10))) + " ." for _ in range(pairs)]


def trial_files(loss, error, refs, seed):
    """`{"nll", "tokens", "translations"}` of one trial: per-pair NLL around `loss`, words wrong at `error`."""
    rng = np.random.default_rng(seed)
    tokens = np.array([len(r.split()) + 1 for r in refs])
    nll = tokens * loss * rng.gamma(4.0, 0.25, len(refs))
    translations = [" ".join(w if rng.random() > error else rng.choice(WORDS) for w in r.split()) for r in refs]
    return {"nll": nll.tolist(), "tokens": tokens.tolist(), "translations": translations}


def write_study(run_dir, configs, seeds=(0,), pairs=120, memory_kind="host_rss", validation=True, seed_noise=0.08):
    """Write results.csv (and validation/ unless `validation` is False) under `run_dir`; returns the typed rows.

    `configs`: dicts with `rank`, `batch_size`, `loss`, `error`, `time`, `memory`.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    refs = references(pairs)
    if validation:
        (run_dir / "validation").mkdir(exist_ok=True)
        (run_dir / "validation" / "references.json").write_text(json.dumps({"sources": refs, "references": refs}))
    rows = []
    for c_index, config in enumerate(configs):
        for seed in seeds:
            rng = np.random.default_rng(1000 * c_index + seed)
            trial_id = str(len(rows))
            files = trial_files(config["loss"] * (1 + seed_noise * rng.standard_normal()),
                                config["error"] * (1 + seed_noise * rng.standard_normal()), refs,
                                seed=10_000 + 100 * c_index + seed)
            if validation:
                (run_dir / "validation" / f"trial_{trial_id}.json").write_text(json.dumps(files))
            val_loss = sum(files["nll"]) / sum(files["tokens"])
            low, high = val_loss_interval(files["nll"], files["tokens"])
            time_s = config["time"] * (1 + 0.03 * rng.standard_normal())
            rows.append(dict(
                trial_id=trial_id, status="COMPLETED", rank=config["rank"], batch_size=config["batch_size"],
                learning_rate=1e-3, lora_alpha=config["rank"], epochs=3, seed=seed, training_time_s=time_s,
                tokens_per_s=30_000 / time_s, final_loss=val_loss - 0.02, val_loss=val_loss,
                val_loss_ci_low=low, val_loss_ci_high=high,
                bleu=sacrebleu.BLEU(force=True).corpus_score(files["translations"], [refs]).score,
                chrf=sacrebleu.CHRF().corpus_score(files["translations"], [refs]).score,
                peak_memory_mb=config["memory"] + 12 * rng.standard_normal(), memory_kind=memory_kind,
                trainable_params=config["rank"] * 1000, total_params=1_000_000, targets="q,v", lora_dropout=0.0,
                lora_init="gaussian", precision="float32",
                **translation_intervals(files["translations"], refs),
            ))
    write_results_csv(rows, run_dir / "results.csv")
    return typed_rows(read_results_csv(run_dir / "results.csv"))


# Two configurations of one batch size: rank 16 a little better than rank 4, the same memory (CPU RSS).
TWO_CONFIGS = [
    dict(rank=16, batch_size=8, loss=0.120, error=0.20, time=20.0, memory=1320.0),
    dict(rank=4, batch_size=8, loss=0.160, error=0.30, time=19.0, memory=1325.0),
]
