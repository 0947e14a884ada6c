"""Strategies from outside this package: `--strategy module:Class` and installed plug-ins (entry points).

A plug-in module written to tmp_path runs a tiny sweep from the command line (in this process) and
resumes; keras-tuner's own `RandomSearchOracle` runs by `module:Class`; an installed distribution is
faked with a `*.dist-info` directory, whose entry points `--help` lists and `--strategy` runs. A plug-in
or strategy module that fails to import is named in one line, and breaks no other strategy. The
example package of docs/strategies.md (examples/strategy_plugin/) is the code the docs show, and runs.
"""

import json
import re
import sys
import tomllib

import keras_tuner
import pytest
from conftest import ROOT, run_main
from keras_tuner.engine.trial import TrialStatus
from test_strategies import run_trials_eagerly
from test_tune_errors import assert_one_line_exit_2, load_tune

import tuners.strategies as strategies
from lora_keras.errors import InputError
from lora_keras.results.table import read_results_csv
from tuners.strategies import budgets_in_epochs, make_oracle, oracle_class

EXAMPLE = ROOT / "examples" / "strategy_plugin"
DOCS = ROOT / "docs" / "strategies.md"

# The highest rank first, every other hyperparameter at its first value: an order the grid does not give.
PLUGIN = '''
import keras_tuner
from keras_tuner.engine.trial import TrialStatus


class HighestRankFirst(keras_tuner.Oracle):
    def populate_space(self, trial_id):
        taken = {trial.hyperparameters.values["rank"] for trial in self.trials.values()}
        ranks = next(hp.values for hp in self.hyperparameters.space if hp.name == "rank")
        for rank in sorted(set(ranks) - taken, reverse=True):
            values = {hp.name: hp.default for hp in self.hyperparameters.space}
            return {"status": TrialStatus.RUNNING, "values": {**values, "rank": rank}}
        return {"status": TrialStatus.STOPPED}


class NotAnOracle:
    pass
'''


def sweep_args(tiny_preset, tiny_corpus, logdir, strategy, *extra):
    train, val = tiny_corpus
    return ["--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English",
            "--target-lang", "Dravic", "--ranks", 1, 2, "--batch-sizes", 8, "--epochs", 1,
            "--max-train-examples", 16, "--max-val-examples", 4, "--max-target-length", 16,
            "--strategy", strategy, "--logdir", logdir, "--name", "plugin", "--quiet", *extra]


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """`mymod` on sys.path, holding `HighestRankFirst` and `NotAnOracle`; `brokenmod`, a syntax error."""
    directory = tmp_path / "plugin_src"
    directory.mkdir()
    (directory / "mymod.py").write_text(PLUGIN)
    (directory / "brokenmod.py").write_text("class Oracle(:\n")
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    sys.modules.pop("mymod", None)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A fake installed distribution whose entry points (group lora_keras.strategies) are the example
    package's `cheapest_first`, and `broken_plugin`, whose module has a syntax error."""
    site = tmp_path / "site"
    info = site / "lora_keras_test_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lora-keras-test-plugins\nVersion: 0.1\n")
    declared = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    lines = [f"{name} = {value}" for name, value in declared[strategies.ENTRY_POINT_GROUP].items()]
    (info / "entry_points.txt").write_text(
        f"[{strategies.ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\nbroken_plugin = broken_plugin:Oracle\n")
    (site / "broken_plugin.py").write_text("class Oracle(:\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield site
    for name in ("cheapest_first", "broken_plugin"):
        sys.modules.pop(name, None)


def run_tune(argv):
    load_tune().main(argv)


def help_text():
    code, stdout, stderr = run_main("tune.py", "--help")
    assert code == 0, stderr
    return " ".join(stdout.split())


def drive(oracle, directory):
    """Create and finish trials until `oracle` stops: each trial's hyperparameter values."""
    oracle.verbose = 0
    oracle._set_project_dir(str(directory), "tuner")  # what a Tuner does
    seen = []
    while (trial := oracle.create_trial("tuner0")).status != TrialStatus.STOPPED:
        seen.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_loss": 1.0})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
    return seen


def space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("rank", [1, 4, 16], ordered=True)
    hp.Choice("batch_size", [8, 64], ordered=True)
    return hp


def test_a_module_class_plugin_sweeps_from_the_cli_and_resumes(plugin_module, tiny_preset, tiny_corpus, tmp_path,
                                                               monkeypatch):
    run_trials_eagerly(monkeypatch)
    args = sweep_args(tiny_preset, tiny_corpus, tmp_path, "mymod:HighestRankFirst")
    code, _, stderr = run_main("tune.py", *args)
    assert code == 0, stderr[-3000:]
    run_dir = tmp_path / "plugin"
    rows = read_results_csv(run_dir / "results.csv")
    assert [(row["rank"], row["status"]) for row in rows] == [("2", "COMPLETED"), ("1", "COMPLETED")]
    # Recorded as given, so resume, workers and report.py resolve it the same way.
    assert json.loads((run_dir / "run_config.json").read_text())["strategy"] == "mymod:HighestRankFirst"
    code, stdout, stderr = run_main("tune.py", *args)
    assert code == 0, stderr[-3000:]
    assert "Running Trial" not in stdout and read_results_csv(run_dir / "results.csv") == rows


def test_keras_tuners_own_random_search_oracle_runs_by_module_class(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    run_trials_eagerly(monkeypatch)
    name = "keras_tuner.oracles:RandomSearchOracle"
    assert oracle_class(name) is keras_tuner.oracles.RandomSearchOracle and not budgets_in_epochs(name)
    oracle = make_oracle(name, "val_loss", None, space(), 0)
    assert oracle.max_trials == 6 and oracle.seed == strategies.SEED_FOR_ZERO  # one per combination, seeded
    assert not oracle.allow_new_entries and not oracle.tune_new_entries
    code, _, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, tmp_path, name))
    assert code == 0, stderr[-3000:]
    rows = read_results_csv(tmp_path / "plugin" / "results.csv")
    assert sorted(row["rank"] for row in rows) == ["1", "2"] and {row["status"] for row in rows} == {"COMPLETED"}


def test_only_the_arguments_a_constructor_names_are_passed(tmp_path):
    class Narrow(keras_tuner.Oracle):  # the four the docs once named, nothing else
        def __init__(self, objective, max_trials, hyperparameters, seed):
            super().__init__(objective=objective, max_trials=max_trials, hyperparameters=hyperparameters, seed=seed)

        def populate_space(self, trial_id):
            return {"status": TrialStatus.STOPPED}

    class Wide(Narrow):
        def __init__(self, required_option, **kwargs):
            pass

    strategies.register("narrow_test", Narrow)
    strategies.register("wide_test", Wide)
    try:
        assert make_oracle("narrow_test", "val_loss", 3, space(), 5).seed == 5
        with pytest.raises(InputError, match=r"strategy wide_test: its constructor cannot take .*required_option"):
            make_oracle("wide_test", "val_loss", 3, space(), 5)
    finally:
        del strategies.STRATEGIES["narrow_test"], strategies.STRATEGIES["wide_test"]


@pytest.mark.parametrize("name, message", [
    ("mymod:NotAnOracle", "--strategy mymod:NotAnOracle: class NotAnOracle is not a keras_tuner.Oracle subclass"),
    ("mymod:Nope", "--strategy mymod:Nope: module mymod has no Nope"),
    ("nomod:Oracle", "--strategy nomod:Oracle: no module nomod on the Python path"),
    ("brokenmod:Oracle", "--strategy brokenmod:Oracle: module brokenmod failed to import: SyntaxError: "),
    ("mymod:", "--strategy mymod:: write it as module.path:OracleClass"),
    ("nope", "--strategy nope is not registered; choose from bayesian, cost_aware, grid, hyperband, random; "
             "or module.path:OracleClass"),
])
def test_a_strategy_that_does_not_resolve_is_one_line_exit_2(plugin_module, capsys, name, message):
    with pytest.raises(SystemExit) as caught:
        run_tune(["--strategy", name, "--logdir", str(plugin_module)])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err, message)


def test_an_installed_plugin_is_listed_and_runs_and_a_broken_one_breaks_nothing(installed, tmp_path, capsys):
    text = help_text()
    assert ("search strategy: bayesian, cost_aware, grid, hyperband, random; plug-ins: broken_plugin, "
            "cheapest_first; or module.path:OracleClass") in text
    assert "broken_plugin" not in sys.modules  # listed, not imported
    from cheapest_first import CheapestFirstOracle

    assert oracle_class("cheapest_first") is CheapestFirstOracle
    seen = drive(make_oracle("cheapest_first", "val_loss", None, space(), 0), tmp_path / "cheapest")
    assert [(v["rank"], v["batch_size"]) for v in seen] == [(1, 64), (1, 8), (4, 64), (4, 8), (16, 64), (16, 8)]
    with pytest.raises(SystemExit) as caught:
        run_tune(["--strategy", "broken_plugin", "--logdir", str(tmp_path)])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err,
                           "--strategy broken_plugin: plug-in broken_plugin (broken_plugin:Oracle) failed to import: "
                           "SyntaxError: invalid syntax")
    # Every other strategy still resolves, the good plug-in too.
    for name in ("grid", "hyperband", "cheapest_first", "keras_tuner.oracles:RandomSearchOracle"):
        assert issubclass(oracle_class(name), keras_tuner.Oracle)
    assert "broken_plugin" in help_text()


def test_a_broken_strategy_module_is_named_and_breaks_no_other(tmp_path, monkeypatch, capsys):
    """A syntax error in one file of tuners/strategies/: --help and every other strategy still work."""
    extra = tmp_path / "more_strategies"
    extra.mkdir()
    (extra / "half_written.py").write_text("from tuners.strategies import register\nregister('half_written', \n")
    monkeypatch.setattr(strategies, "__path__", [*strategies.__path__, str(extra)])
    monkeypatch.setattr(strategies, "BROKEN_MODULES", {})
    broken = strategies.import_builtins()
    assert list(broken) == ["half_written.py"] and broken["half_written.py"].startswith("SyntaxError: ")
    text = help_text()
    assert "search strategy: bayesian, cost_aware, grid, hyperband, random;" in text
    assert "not loaded: tuners/strategies/half_written.py (SyntaxError: " in text
    with pytest.raises(SystemExit) as caught:
        run_tune(["--strategy", "half_written", "--logdir", str(tmp_path)])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err,
                           "--strategy half_written: tuners/strategies/half_written.py failed to import: SyntaxError")
    assert make_oracle("grid", "val_loss", None, space(), 0).max_trials == 6


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def test_the_docs_example_package_is_the_tested_one(tmp_path, monkeypatch):
    docs = DOCS.read_text()
    source = (EXAMPLE / "cheapest_first.py").read_text()
    assert source in python_blocks(docs)  # the docs show the whole module, as it is
    assert (EXAMPLE / "pyproject.toml").read_text() in re.findall(r"```toml\n(.*?)```", docs, re.DOTALL)
    declared = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
    value = declared[strategies.ENTRY_POINT_GROUP]["cheapest_first"]
    monkeypatch.syspath_prepend(str(EXAMPLE))
    try:
        from cheapest_first import CheapestFirstOracle

        assert value == "cheapest_first:CheapestFirstOracle" and oracle_class(value) is CheapestFirstOracle
        seen = drive(make_oracle(value, "val_loss", 4, space(), 0), tmp_path)
        assert [(v["rank"], v["batch_size"]) for v in seen] == [(1, 64), (1, 8), (4, 64), (4, 8)]
    finally:
        sys.modules.pop("cheapest_first", None)
