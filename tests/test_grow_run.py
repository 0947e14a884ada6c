"""A finished run grows: a larger `--max-trials` or more values on an axis continues it, its trials kept.

Any other change is refused in one line naming the flag that differs, the run directory untouched.
"""

import csv
import json

import pytest

from conftest import run_main
from tuners.run_files import run_changes
from tuners.search_space import SearchSpace
from tuners.sweep_config import SweepConfig


def sweep_args(tiny_preset, tiny_corpus, logdir, *extra):
    train, val = tiny_corpus
    return ["--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English",
            "--target-lang", "Dravic", "--batch-sizes", "8", "--epochs", "1", "--max-train-examples", "16",
            "--max-val-examples", "4", "--max-target-length", "16", "--logdir", logdir, "--name", "grow",
            "--quiet", *extra]


def read_rows(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def trained(stdout):
    """The trials keras-tuner says it ran (`Search: Running Trial #2`)."""
    return [line.split("#")[-1] for line in stdout.splitlines() if "Running Trial #" in line]


def run_files(run_dir):
    """Every file of the run but its lock (which names the last process that held it), as bytes."""
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in sorted(run_dir.rglob("*"))
            if path.is_file() and path.name != "run.lock"}


@pytest.fixture(scope="module")
def grid_run(tiny_preset, tiny_corpus, tmp_path_factory):
    """A finished grid run of rank 1 alone, then the same run grown by rank 2: `(run_dir, rows before, stdout)`."""
    logdir = tmp_path_factory.mktemp("logs")
    code, _, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, logdir, "--ranks", "1"))
    assert code == 0, stderr[-3000:]
    before = read_rows(logdir / "grow")
    code, stdout, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, logdir, "--ranks", "1", "2"))
    assert code == 0, stderr[-3000:]
    return logdir / "grow", before, stdout


def test_a_grid_grown_by_a_rank_trains_only_the_new_trial(grid_run):
    run_dir, before, stdout = grid_run
    rows = read_rows(run_dir)
    assert [(row["rank"], row["status"]) for row in rows] == [("1", "COMPLETED"), ("2", "COMPLETED")]
    assert rows[0] == before[0]  # the finished trial kept, every figure as it was
    assert len(trained(stdout)) == 1 and rows[1]["trial_id"] != before[0]["trial_id"]
    assert json.loads((run_dir / "run_config.json").read_text())["space"]["ranks"] == [1, 2]


def test_the_grown_run_resumes_as_grown(grid_run, tiny_preset, tiny_corpus):
    run_dir, _, _ = grid_run
    rows = read_rows(run_dir)
    code, stdout, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, run_dir.parent,
                                                           "--ranks", "1", "2"))
    assert code == 0, stderr[-3000:]
    assert trained(stdout) == [] and read_rows(run_dir) == rows


@pytest.mark.parametrize("extra, message", [
    (["--ranks", "1", "2", "--epochs", "2"], "--epochs: {run_dir} was run with 1, this command says 2; "
                                             "pass --overwrite to start again or another --name for a new run"),
    (["--ranks", "1", "2", "--learning-rates", "0.01"], "--learning-rates: {run_dir} was run with 0.003, "
                                                        "this command says 0.01; pass --overwrite"),
    (["--ranks", "2"], "--ranks: {run_dir} was run with 1 2, this command says 2; pass --overwrite"),
    (["--ranks", "1", "2", "--lora-dropouts", "0", "0.1"],
     "--lora-dropouts: {run_dir} was run with 0.0, this command says 0.0 0.1 (a setting the run did not search "
     "cannot become an axis: its trials hold no value of it); pass --overwrite"),
])
def test_any_other_change_is_refused_naming_its_flag(grid_run, tiny_preset, tiny_corpus, extra, message):
    run_dir, _, _ = grid_run
    files = run_files(run_dir)
    code, stdout, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, run_dir.parent, *extra))
    assert code == 2
    assert stderr.strip().splitlines() == [stderr.strip()] and "Traceback" not in stderr
    assert stderr.startswith("tune.py: error: " + message.format(run_dir=run_dir)), stderr
    assert run_files(run_dir) == files


def test_a_random_run_continues_with_a_larger_max_trials(tiny_preset, tiny_corpus, tmp_path):
    args = sweep_args(tiny_preset, tiny_corpus, tmp_path, "--ranks", "1", "2", "--strategy", "random")
    code, _, stderr = run_main("tune.py", *args, "--max-trials", "1")
    assert code == 0, stderr[-3000:]
    before = read_rows(tmp_path / "grow")
    code, stdout, stderr = run_main("tune.py", *args, "--max-trials", "2")
    assert code == 0, stderr[-3000:]
    rows = read_rows(tmp_path / "grow")
    assert len(trained(stdout)) == 1 and len(rows) == 2 and rows[0] == before[0]
    assert sorted(row["rank"] for row in rows) == ["1", "2"]  # random draws no combination twice
    assert json.loads((tmp_path / "grow" / "run_config.json").read_text())["max_trials"] == 2
    code, _, stderr = run_main("tune.py", *args, "--max-trials", "1")
    assert code == 2 and "--max-trials: " in stderr and "was run with 2, this command says 1" in stderr


def identity(**settings):
    space = settings.pop("space", {})
    return SweepConfig(space=SearchSpace(**{"ranks": (1,), "batch_sizes": (8,), **space}), **settings).identity()


@pytest.mark.parametrize("was, says, expected", [
    (identity(max_trials=5), identity(max_trials=6), [("max_trials", 5, 6, True)]),
    (identity(max_trials=5), identity(), [("max_trials", 5, None, True)]),  # None: no limit
    (identity(), identity(max_trials=5), [("max_trials", None, 5, False)]),
    (identity(max_trials=5), identity(max_trials=4), [("max_trials", 5, 4, False)]),
    (identity(space={"batch_sizes": (8, 16)}), identity(space={"batch_sizes": (16, 8, 32)}),
     [("batch_size", [8, 16], [16, 8, 32], True)]),
    (identity(space={"lora_alphas": (8, 16)}), identity(space={"lora_alphas": (8, 16, 32)}),
     [("alpha", [8, 16], [8, 16, 32], True)]),
    (identity(space={"target_sets": (("q", "v"),)}), identity(space={"target_sets": (("q", "v"), ("k",))}),
     [("targets", [["q", "v"]], [["q", "v"], ["k"]], False)]),  # one set is a setting, not an axis
    (identity(repeats=2), identity(repeats=3), [("repeats", 2, 3, False)]),  # other seeds: another run
    (identity(space={"lora_dropouts": (0.0,)}), identity(space={"lora_dropouts": (0.0, 0.1)}),
     [("dropout", [0.0], [0.0, 0.1], False)]),
    (identity(epochs=1, max_trials=5), identity(epochs=2, max_trials=6),
     [("epochs", 1, 2, False), ("max_trials", 5, 6, True)]),
])
def test_run_changes_grow_a_run_only_by_budget_and_axis_values(was, says, expected):
    assert run_changes(was, says) == expected
