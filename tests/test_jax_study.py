"""The whole study on Keras's JAX backend with TensorFlow unimportable, against the same study on TensorFlow.

Every command runs in a process of its own with `KERAS_BACKEND=jax` and `tests/no_tensorflow`
first on `PYTHONPATH` (importing TensorFlow fails there, as on a machine without it): `tune.py`
(packed trials, repeats over seeds, a kill and a resume, a chief with a worker), `report.py`,
`translate.py`, `export.py`. The TensorFlow study of the same grid runs beside it: the same
pairs, order and initial adapters, so per-trial losses agree to float rounding.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT
from test_distributed import free_port

pytestmark = pytest.mark.e2e

GRID = ["--ranks", "1", "2", "--batch-sizes", "8", "16", "--epochs", "2", "--max-train-examples", "32",
        "--max-val-examples", "16", "--max-target-length", "16", "--quiet"]


def jax_env():
    return {**os.environ, "KERAS_BACKEND": "jax",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_tensorflow"), str(ROOT)])}


def tf_env():
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}


def tune_args(tiny_preset, tiny_corpus, logdir, name, *extra):
    train, val = tiny_corpus
    return [sys.executable, str(ROOT / "scripts" / "tune.py"), "--model", str(tiny_preset), "--train", str(train),
            "--val", str(val), "--source-lang", "English", "--target-lang", "Dravic", *GRID,
            "--logdir", str(logdir), "--name", name, *extra]


def run(args, env, timeout=900):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return {(row["rank"], row["batch_size"], row.get("seed", "0")): row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def studies(tiny_preset, tiny_corpus, tmp_path_factory):
    """The same grid, once on TensorFlow and once on JAX without TensorFlow."""
    logdir = tmp_path_factory.mktemp("studies")
    run(tune_args(tiny_preset, tiny_corpus, logdir, "tf"), tf_env())
    done = run(tune_args(tiny_preset, tiny_corpus, logdir, "jax"), jax_env())
    return logdir, done


def test_the_study_on_jax_gives_tensorflows_numbers(studies):
    logdir, done = studies
    assert "tensorflow" not in done.stderr.lower() or "blocked" not in done.stderr
    tf_rows, jax_rows = rows(logdir / "tf"), rows(logdir / "jax")
    assert set(jax_rows) == set(tf_rows) and len(jax_rows) == 4
    for key, tf_row in tf_rows.items():
        jax_row = jax_rows[key]
        assert jax_row["status"] == "COMPLETED"
        # The same pairs, order, initial A and steps: the backends differ in float rounding only.
        assert float(jax_row["val_loss"]) == pytest.approx(float(tf_row["val_loss"]), rel=1e-3), key
        assert float(jax_row["final_loss"]) == pytest.approx(float(tf_row["final_loss"]), rel=1e-3), key
        assert int(jax_row["trainable_params"]) == int(tf_row["trainable_params"])
        assert abs(float(jax_row["bleu"]) - float(tf_row["bleu"])) <= 0.5 + 1e-9, key
    tf_base = json.loads((logdir / "tf" / "baseline.json").read_text())
    jax_base = json.loads((logdir / "jax" / "baseline.json").read_text())
    assert jax_base["val_loss"] == pytest.approx(tf_base["val_loss"], rel=1e-4)


def test_the_jax_study_writes_every_output(studies):
    logdir, _ = studies
    run_dir = logdir / "jax"
    for name in ("results.csv", "results.md", "summary.csv", "loss_vs_rank.png", "time_vs_batch_size.png"):
        assert (run_dir / name).is_file(), name
    sessions = sorted(p for p in (run_dir / "tensorboard").glob("trial_*") if p.is_dir())
    assert len(sessions) == 4
    scalars = EventAccumulator(str(sessions[0]), size_guidance={"tensors": 0})
    scalars.Reload()
    tags = set(scalars.Tags()["tensors"])
    assert {"val_loss", "epoch_time_s", "peak_memory_mb", "trainable_params", "bleu"} <= tags, tags
    assert len(scalars.Tensors("val_loss")) == 2  # one per epoch
    images = EventAccumulator(str(run_dir / "tensorboard" / "report"), size_guidance={"tensors": 0})
    images.Reload()
    assert {"loss_vs_rank", "time_vs_batch_size"} <= {tag.split("/")[0] for tag in images.Tags()["tensors"]}
    # report.py, translate.py and export.py on JAX too.
    report = run([sys.executable, ROOT / "scripts" / "report.py", run_dir, "--memory-budget-mb", "100000"], jax_env())
    assert "rank" in report.stdout
    adapter = sorted((run_dir / "adapters").glob("trial_*.safetensors"))[0]
    model = json.loads((run_dir / "run_config.json").read_text())["model"]
    translated = run([sys.executable, ROOT / "scripts" / "translate.py", "--model", model, "--adapter", adapter,
                      "the cat sleeps ."], jax_env())
    assert translated.stdout.strip()
    run([sys.executable, ROOT / "scripts" / "export.py", "--model", model, "--adapter", adapter,
         "--out", logdir / "exported"], jax_env())
    assert (logdir / "exported" / "config.json").is_file()


def test_packed_trials_and_repeats_on_jax_train_as_alone(tiny_preset, tiny_corpus, tmp_path):
    """Packed under XLA on JAX (the slot count a number in the traced step), as they would train alone."""
    run(tune_args(tiny_preset, tiny_corpus, tmp_path, "packed", "--repeats", "2", "--pack", "4"), jax_env())
    run(tune_args(tiny_preset, tiny_corpus, tmp_path, "alone", "--repeats", "2", "--no-pack"), jax_env())
    packed, alone = rows(tmp_path / "packed"), rows(tmp_path / "alone")
    assert len(packed) == len(alone) == 8 and {row["status"] for row in packed.values()} == {"COMPLETED"}
    assert all(row["pack_group"] for row in packed.values()) and not any(r["pack_group"] for r in alone.values())
    assert {row["jit_compile"] for row in packed.values()} == {"True"}
    for key, row in packed.items():
        assert float(row["val_loss"]) == pytest.approx(float(alone[key]["val_loss"]), rel=1e-3), key


def test_a_killed_jax_study_resumes(tiny_preset, tiny_corpus, tmp_path):
    args = tune_args(tiny_preset, tiny_corpus, tmp_path, "killed", "--pack", "1")
    process = subprocess.Popen([str(a) for a in args], env=jax_env(), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    measured = tmp_path / "killed" / "tuner"
    deadline = time.monotonic() + 600
    while not list(measured.glob("trial_*/measurements.json")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run(args, jax_env())
    found = rows(tmp_path / "killed")
    assert len(found) == 4 and {row["status"] for row in found.values()} == {"COMPLETED"}


def test_a_jax_chief_and_worker(tiny_preset, tiny_corpus, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    args = tune_args(tiny_preset, tiny_corpus, tmp_path, "shared", "--pack", "1", "--oracle-address", address)
    with open(tmp_path / "chief.err", "w") as chief_err:
        chief = subprocess.Popen([str(a) for a in args + ["--distributed", "chief"]], env=jax_env(), cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=chief_err)
        worker = run(args + ["--distributed", "worker", "--worker-id", "w1"], jax_env())
        assert chief.wait(timeout=300) == 0, (tmp_path / "chief.err").read_text()[-2000:]
    assert worker.returncode == 0
    found = rows(tmp_path / "shared")
    assert len(found) == 4 and {row["tuner_id"] for row in found.values()} == {"w1"}


def test_hyperband_in_bfloat16_on_jax(tiny_preset, tiny_corpus, tmp_path):
    """A strategy whose trials continue their parents' weights, in mixed bfloat16, on JAX."""
    run(tune_args(tiny_preset, tiny_corpus, tmp_path, "hb", "--strategy", "hyperband", "--precision",
                  "mixed_bfloat16"), jax_env())
    with open(tmp_path / "hb" / "results.csv", newline="") as handle:
        found = list(csv.DictReader(handle))
    assert found and {row["status"] for row in found} == {"COMPLETED"}
    assert {row["precision"] for row in found} == {"mixed_bfloat16"}
    assert any(row["parent_trial_id"] for row in found)  # a continued trial loaded its parent's checkpoint
