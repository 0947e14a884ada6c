"""A CPU run prints no GPU-probe error lines: TensorFlow's search for a GPU is made quietly without a driver.

Each check is a process of its own: TensorFlow searches once per process, and this one has searched.
"""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_script
from lora_keras.runtime.gpu_probe import nvidia_driver_installed

pytestmark = pytest.mark.skipif(nvidia_driver_installed(), reason="a machine with a GPU driver searches as before")

PROBE_LINES = ("cuInit", "failed call to cu", "Could not find cuda drivers")

USE_DEVICES = """
from lora_keras.cli import native_stderr_silenced
from lora_keras.runtime.gpu_probe import probe_gpus_quietly
with native_stderr_silenced():
    import tensorflow as tf   # its start-up notices, hidden as the scripts hide them
if {probe}:
    probe_gpus_quietly()
print(tf.config.list_physical_devices("GPU"), float(tf.reduce_sum(tf.ones(3))))
"""


@pytest.mark.parametrize("probe", [True, False])
def test_devices_used_after_the_quiet_probe_print_nothing_on_stderr(probe):
    result = subprocess.run([sys.executable, "-c", USE_DEVICES.format(probe=probe)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[] 3.0\n"
    if probe:
        assert result.stderr == ""
    else:  # what the probe hides: TensorFlow's own search logs an error without a driver
        assert "failed call to cuInit" in result.stderr


def test_a_cpu_run_that_uses_devices_prints_only_its_own_error(tmp_path):
    """`--devices 2` searches for GPUs, then refuses: its one line is all of stderr (at `TF_CPP_MIN_LOG_LEVEL` 2)."""
    result = run_script("tune.py", "--devices", "2", "--logdir", tmp_path, "--quiet",
                        env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2
    assert result.stderr == "tune.py: error: --devices 2: this machine has no GPU; ask for fewer, or cpu:N to test " \
                            "without GPUs\n"
    assert not any(line in result.stderr for line in PROBE_LINES)


def test_translate_on_a_cpu_prints_its_translation_and_nothing_on_stderr():
    """Every entry point loads the backend the same way (`lora_keras.runtime.gpu_probe.load_backend_quietly`)."""
    result = run_script("translate.py", "--model", "tiny", "--max-new-tokens", "4",
                        "translate English to Dravic: the dog runs .", env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert result.stderr == ""
