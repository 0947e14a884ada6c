"""Shared fixtures: a tiny T5 keras-hub preset and tiny TSV corpora, made once per session."""

import contextlib
import importlib
import importlib.util
import io
import os
import pathlib
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_keras.models.demo import corpus as demo_corpus  # noqa: E402
from lora_keras.results.table import COLUMNS  # noqa: E402

TINY_PREFIX = "translate English to Dravic: "


def in_ci():
    """Whether the suite runs in CI (`CI=true`, as `.ci/run` and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(name):
    """`import name` for a test's reference library (torch, transformers, peft), or skip the test.

    Skipping is for a machine without the test extra; in CI (`in_ci()`) a module
    that is missing, or installed so broken that importing it raises `ImportError`,
    fails the run instead, so parity tests are never skipped silently. Any other
    error at import fails everywhere. Works at module level, like `pytest.importorskip`.

    Example: `torch = require("torch")`.
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        if in_ci():
            pytest.fail(f"{name} cannot be imported under CI=true ({error}); install the test extra: "
                        "pip install -e '.[test]'", pytrace=False)
        pytest.skip(f"{name} is not installed ({error}); pip install -e '.[test]' to run this test",
                    allow_module_level=True)


def tiny_backbone_kwargs(vocabulary_size):
    return dict(
        vocabulary_size=vocabulary_size, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, key_value_dim=16, dropout=0.0, activation="gelu",
        use_gated_activation=True, tie_embedding_weights=False,
    )


def write_tsv(path, pairs, header=True):
    lines = (["source\ttarget"] if header else []) + [f"{s}\t{t}" for s, t in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """`(train.tsv, val.tsv)` of 96 and 24 English->Dravic pairs."""
    directory = tmp_path_factory.mktemp("corpus")
    train = demo_corpus.generate_pairs("Dravic", 96, seed=1)
    val = demo_corpus.generate_pairs("Dravic", 24, seed=1, split="val")
    return write_tsv(directory / "train.tsv", train), write_tsv(directory / "val.tsv", val)


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    """A random-weight tiny T5 (one layer each side) saved as a keras-hub preset dir with its SentencePiece vocab."""
    import keras
    import keras_hub

    from lora_keras.models.tokenizer import train_sentencepiece

    directory = tmp_path_factory.mktemp("tiny_preset")
    pairs = demo_corpus.generate_pairs("Dravic", 400, seed=1)
    texts = [TINY_PREFIX + s for s, _ in pairs] + [t for _, t in pairs]
    tokenizer = keras_hub.models.T5Tokenizer(proto=train_sentencepiece(texts, 300))
    keras.utils.set_random_seed(0)
    # One encoder and one decoder layer: every sweep test builds and traces it, and depth
    # is what tracing costs (2 layers took twice as long).
    backbone = keras_hub.models.T5Backbone(**{**tiny_backbone_kwargs(300), "num_layers": 1})
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


def run_script(script, *args, timeout=600, env=None):
    """Run `scripts/<script>` in a subprocess; returns the CompletedProcess.

    For what only a process shows (start-up, exit status of the interpreter, kill -9, environment);
    `run_main` runs the same entry point in this process, without loading TensorFlow again.
    """
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def load_script(script):
    """`scripts/<script>` as a module (its `main(argv)` callable in this process)."""
    spec = importlib.util.spec_from_file_location(f"script_{script.removesuffix('.py')}", ROOT / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(script, *args):
    """`scripts/<script>`'s `main(args)` in this process: `(exit status, stdout, stderr)` as a process gives them."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            load_script(script).main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def csv_row(**values):
    """A row as `csv.DictReader` gives it: every column, all strings, empty when missing."""
    return {column: "" if values.get(column) is None else str(values[column]) for column in COLUMNS}


def trial(trial_id, rank, batch_size, val_loss, time_s, memory_mb, status="COMPLETED", learning_rate=0.001,
          **extra):
    """A finished trial's results.csv row (strings), for the report tests."""
    return csv_row(
        trial_id=trial_id, status=status, rank=rank, batch_size=batch_size, learning_rate=learning_rate,
        lora_alpha=2 * rank, epochs=3, training_time_s=time_s, final_loss=val_loss - 0.2 if val_loss else None,
        val_loss=val_loss, bleu=40 - 10 * val_loss if val_loss else None, peak_memory_mb=memory_mb,
        memory_kind="gpu", trainable_params=rank * 1000, total_params=1_000_000, **extra,
    )


# (val loss, time s, peak MiB), all minimised.  Pareto front, best val loss first:
#   t04 (1.80, 130, 1300): lowest val loss, nobody is <= on it.
#   t02 (1.90, 110,  950): only t04 has a lower loss, and t04 is slower and bigger.
#   t03 (2.00,  85, 1600): of t04/t02 (lower loss) both are slower; t01 is faster but worse on loss.
#   t00 (2.10, 100,  900): least memory of all, so nobody is <= on memory.
#   t01 (2.30,  80, 1500): fastest of all, so nobody is <= on time.
# Dominated:
#   t05 (2.05,  90, 1800) by t03 (2.00, 85, 1600): better on all three.
#   t06 (2.20, 105, 1000) by t00 (2.10, 100, 900): better on all three.
# Excluded: t07 FAILED and t08 without a val loss, although both would dominate everything.
REPORT_ROWS = [
    trial("t00", 2, 8, 2.10, 100, 900),
    trial("t01", 2, 32, 2.30, 80, 1500),
    trial("t02", 8, 8, 1.90, 110, 950),
    trial("t03", 8, 32, 2.00, 85, 1600),
    trial("t04", 32, 8, 1.80, 130, 1300),
    trial("t05", 32, 32, 2.05, 90, 1800),
    trial("t06", 4, 16, 2.20, 105, 1000),
    trial("t07", 16, 16, 1.00, 10, 100, status="FAILED"),
    trial("t08", 16, 16, None, 10, 100),
]


@pytest.fixture(scope="session")
def tiny_proto():
    """The tiny SentencePiece vocabulary (pad 0, eos 1, unk 2) of `tiny_preset`, serialized."""
    from lora_keras.models.tokenizer import train_sentencepiece

    pairs = demo_corpus.generate_pairs("Dravic", 400, seed=1)
    return train_sentencepiece([TINY_PREFIX + s for s, _ in pairs] + [t for _, t in pairs], 300)


@pytest.fixture(scope="session")
def hf_t5(tmp_path_factory, tiny_proto):
    """`hf_t5(variant)`: the dir of a tiny random Hugging Face T5 checkpoint (see `hf_models.VARIANTS`)."""
    require("torch")
    from hf_models import save_hf_t5

    made = {}

    def make(variant):
        if variant not in made:
            made[variant] = save_hf_t5(tmp_path_factory.mktemp(f"hf_{variant}"), variant, tiny_proto)
        return made[variant]

    return make


@pytest.fixture(scope="session")
def hf_t5_wide(tmp_path_factory, tiny_proto):
    """`(dir, pieces)`: a FLAN-like checkpoint with FLAN-T5's rows past its pieces (100 sentinels, 28 padding).

    flan-t5-small has 32,128 rows for 32,000 pieces. The padding rows of `lm_head` are scaled
    up so greedy decoding picks them now and then.
    """
    require("torch")
    import sentencepiece
    from hf_models import save_hf_t5
    from safetensors.numpy import load_file, save_file

    pieces = sentencepiece.SentencePieceProcessor(model_proto=tiny_proto).get_piece_size()
    directory = save_hf_t5(tmp_path_factory.mktemp("hf_wide"), "flan", tiny_proto, extra_ids=100,
                           vocab_size=pieces + 128)
    state = load_file(str(directory / "model.safetensors"))
    state["lm_head.weight"][pieces + 100 :] *= 1.5
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory, pieces


# The longest files first. pytest-xdist (`--dist loadfile`) hands files to workers in collection
# order, so a long file collected last (test_tune_cli.py, alphabetically) ran alone at the end.
LONGEST_FILES_FIRST = (  # by their summed durations (`--durations=0`), 2026-11-30
    "test_lora.py", "test_hf_checkpoint.py", "test_tune_cli.py", "test_packing.py", "test_repeats.py",
    "test_evaluation.py",
    "test_hypermodel.py",
    "test_precision.py",
    "test_export.py", "test_peft_parity.py", "test_failures.py", "test_strategies.py", "test_hf_scripts.py",
    "test_callbacks.py", "test_hf_vocabulary.py", "test_demo.py", "test_token_loss.py", "test_layer.py",
)


def pytest_collection_modifyitems(items):
    """Order files longest first; tests keep their order within a file (a stable sort by file)."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
