"""Bad arguments and inputs: one line on stderr naming the problem, exit 2, no traceback."""

import importlib.util

import pytest

from conftest import ROOT, run_script


def load_tune():
    spec = importlib.util.spec_from_file_location("tune_script", ROOT / "scripts" / "tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_line_exit_2(code, stderr, message):
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert message in lines[0] and "Traceback" not in stderr


def test_usage_error_in_a_subprocess():
    result = run_script("tune.py", "--ranks", "0")
    assert_one_line_exit_2(result.returncode, result.stderr, "--ranks: must be at least 1, got 0")


def test_missing_corpus_in_a_subprocess(tmp_path):
    result = run_script("tune.py", "--train", tmp_path / "nope.tsv", "--logdir", tmp_path)
    assert_one_line_exit_2(result.returncode, result.stderr, "--train: no such file")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "extra, files, message",
    [
        (["--ranks", "64"], {}, "LoRA rank 64 is wider than layer"),
        (["--targets", "q", "x"], {}, "--targets: unknown x"),
        (["--strategy", "nope"], {}, "--strategy nope is not registered"),
        (["--train", "{d}/empty.tsv"], {"empty.tsv": ""}, "holds no sentence pairs"),
        (["--train", "{d}/bad.tsv"], {"bad.tsv": "one field only\n"}, "has 1 field(s)"),
        (["--batch-sizes", "8", "abc"], {}, "--batch-sizes: must be a whole number"),
        (["--lora-dropouts", "0", "1"], {}, "--lora-dropouts: must be at least 0 and below 1, got 1"),
        (["--lora-alpha", "4", "0"], {}, "--lora-alpha: must be positive, got 0"),
        (["--targets", "q,v", "q,x"], {}, "--targets: unknown x"),
        (["--targets", ","], {}, "--targets: an empty set"),
        (["--strategy", "hyperband", "--epochs", "1"], {}, "pass --epochs 2 or more"),
        (["--lora-init", "he"], {}, "--lora-init: invalid choice: 'he'"),
        (["--precision", "float8"], {}, "--precision: invalid choice: 'float8'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, tiny_preset, tiny_corpus, extra, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    train, val = tiny_corpus
    args = ["--model", str(tiny_preset), "--train", str(train), "--val", str(val),
            "--source-lang", "English", "--target-lang", "Dravic", "--logdir", str(tmp_path), "--quiet"]
    args += [a.format(d=tmp_path) for a in extra]
    with pytest.raises(SystemExit) as caught:
        load_tune().main(args)
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err, message)
    assert not list(tmp_path.glob("sweep/tuner/trial_*"))


def test_model_that_is_not_a_preset(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        load_tune().main(["--model", str(tmp_path), "--logdir", str(tmp_path)])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err, "has no keras-hub preset")


def test_a_run_with_losses_of_the_old_definition_is_not_resumed(tmp_path, capsys, tiny_preset, tiny_corpus):
    """Runs written before losses were per real target token hold no `loss` in run_config.json."""
    import json

    from tuners.sweep import SweepConfig

    train, val = tiny_corpus
    args = ["--model", str(tiny_preset), "--train", str(train), "--val", str(val), "--source-lang", "English",
            "--target-lang", "Dravic", "--logdir", str(tmp_path), "--quiet"]
    old = SweepConfig(model=str(tiny_preset), train=str(train), val=str(val), source_lang="English",
                      target_lang="Dravic").identity()
    del old["loss"], old["lora_init"]
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "run_config.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit) as caught:
        load_tune().main(args)
    stderr = capsys.readouterr().err
    assert_one_line_exit_2(caught.value.code, stderr, "holds losses computed the old way")
    assert "pass --overwrite to run it again or another --name" in stderr


def test_a_run_resumes_only_in_its_own_precision(tmp_path, capsys, tiny_preset, tiny_corpus):
    """`--precision` is part of the run's identity; a run from before the flag counts as float32."""
    import json

    from tuners.sweep import SweepConfig

    train, val = tiny_corpus
    settings = dict(model=str(tiny_preset), train=str(train), val=str(val), source_lang="English",
                    target_lang="Dravic", logdir=str(tmp_path))
    args = ["--model", str(tiny_preset), "--train", str(train), "--val", str(val), "--source-lang", "English",
            "--target-lang", "Dravic", "--logdir", str(tmp_path), "--quiet"]
    stored = SweepConfig(**settings).identity()
    assert stored["precision"] == "float32" and "jit_compile" not in stored
    assert SweepConfig(**settings, precision="mixed_bfloat16").identity() != stored
    assert SweepConfig(**settings, jit_compile=True).identity() == stored  # XLA does not change the losses
    del stored["precision"]  # written before the flag existed
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "run_config.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit) as caught:
        load_tune().main(args + ["--precision", "mixed_bfloat16"])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err,
                           f"--precision: {tmp_path / 'sweep'} was run with float32, this command says mixed_bfloat16")
    from tuners.run_files import claim_run_dir

    claim_run_dir(SweepConfig(**settings)).release()  # the same run in float32 resumes


def test_bayesian_without_its_extra_says_how_to_install_it(tmp_path, capsys, monkeypatch, tiny_preset, tiny_corpus):
    """scikit-learn is the `bayesian` extra (setup.cfg), as keras-tuner's own; without it (or scipy) the hint says so."""
    from keras_tuner.src.tuners import bayesian

    monkeypatch.setattr(bayesian, "scipy", None)  # what keras-tuner holds when `import scipy` failed
    train, val = tiny_corpus
    with pytest.raises(SystemExit) as caught:
        load_tune().main(["--model", str(tiny_preset), "--train", str(train), "--val", str(val), "--strategy",
                          "bayesian", "--max-trials", "2", "--logdir", str(tmp_path), "--quiet"])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err,
                           "--strategy bayesian needs scipy and scikit-learn, not installed; "
                           "pip install -e '.[bayesian]'")
    assert not (tmp_path / "sweep").exists()


def test_library_errors_name_the_parameter_in_library_terms(tmp_path):
    """The library says `name`, `logdir`, `source_lang`; only a script turns them into flags."""
    import json
    import types

    from lora_keras.cli import flag_message
    from lora_keras.errors import InputError
    from tuners.prepare import _prefix
    from tuners.run_files import RUN_CONFIG_FILE, check_joined_run, claim_run_dir
    from tuners.sweep_config import SweepConfig

    config = SweepConfig(logdir=str(tmp_path), name="run")
    with pytest.raises(InputError) as missing:
        check_joined_run(config)
    config.run_dir.mkdir(parents=True)
    (config.run_dir / RUN_CONFIG_FILE).write_text(json.dumps({**config.identity(), "seed": 7}))
    with pytest.raises(InputError) as other:
        claim_run_dir(config)
    with pytest.raises(InputError) as joined:  # a worker on the chief's run with other settings
        check_joined_run(config)
    assert flag_message(joined.value) == (f"--seed: {config.run_dir} is the chief's run with 7, this worker says 0; "
                                          "give workers the chief's settings")
    with pytest.raises(InputError) as languages:
        _prefix(SweepConfig(), types.SimpleNamespace(task=None))
    errors = [missing.value, other.value, languages.value]
    assert [error.parameter for error in errors] == ["logdir", "seed", "source_lang"]
    for error in errors:
        assert "--" not in str(error) and str(error).startswith(error.parameter + ":")
    assert flag_message(other.value) == (f"--seed: {config.run_dir} was run with 7, this command says 0; "
                                         "pass --overwrite to start again or another --name for a new run")
    assert "needs --source-lang and --target-lang; give both (or the --prefix itself)" in flag_message(languages.value)
