"""XLA for training: bounded batch shapes (lengths padded to multiples of 16), the same losses as without it."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from lora_keras.data.pipeline import TokenizedPairs, make_dataset
from lora_keras.runtime.xla import LENGTH_MULTIPLE, bucket_length, default_jit_compile


def test_bucket_lengths():
    assert [bucket_length(n, 16, 64) for n in (1, 16, 17, 33, 64)] == [16, 16, 32, 48, 64]
    assert bucket_length(33, 16, 40) == 40  # never past the padded width
    assert bucket_length(33, None, 40) == 33
    assert default_jit_compile(1) and not default_jit_compile(0)


def test_padded_batches_take_a_handful_of_shapes_with_the_same_tokens():
    rng = np.random.default_rng(0)
    source = np.zeros((200, 60), np.int32)
    target = np.zeros((200, 50), np.int32)
    for row in range(200):
        source[row, : rng.integers(1, 61)] = 7
        target[row, : rng.integers(1, 51)] = 9
    tokens = TokenizedPairs(source, target)
    exact = {(x["encoder_token_ids"].shape, x["decoder_token_ids"].shape) for x, _, _ in make_dataset(tokens, 8)}
    padded = list(make_dataset(tokens, 8, length_multiple=LENGTH_MULTIPLE))
    shapes = {(x["encoder_token_ids"].shape, x["decoder_token_ids"].shape) for x, _, _ in padded}
    assert len(shapes) <= 4 * 4 < len(exact)  # 60 -> 16, 32, 48, 60; 50 -> 16, 32, 48, 50
    assert all(s[1] % 16 == 0 or s[1] == 60 for (s, _) in shapes)
    real = sum(int(np.asarray(w).sum()) for _, _, w in padded)
    assert real == int((target != 0).sum())  # padding adds no weighted token


@pytest.mark.e2e
def test_xla_trains_like_without_it_and_compiles_a_bounded_number_of_times(tmp_path):
    """On TensorFlow, XLA's compiles read from its own log (`device_compiler`), the bound from the ids alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "0",
           "TF_CPP_VMODULE": "device_compiler=1,device_compilation_profiler=1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_trial.py"), str(tmp_path), "xla", "eager"],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    step_compiles = len(re.findall(r"Compiled __inference_one_step_on_data", done.stderr))
    xla, eager = report["xla"], report["eager"]
    print(f"\nXLA: loss {xla['final_loss']}, val {xla['val_loss']}; without: loss {eager['final_loss']}, "
          f"val {eager['val_loss']}; train and eval steps compiled {step_compiles} times "
          f"(train bound {report['shapes_bound']}, exact-cut shapes {report['exact_shapes']})")
    assert xla["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)
    assert xla["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
    # Train steps within the bound the ids give (cut exactly, the batches take more shapes than that),
    # plus the eval step's (one batch of 16 pairs: one shape).
    assert 2 <= step_compiles <= report["shapes_bound"] + 1 < report["exact_shapes"] + 1
