"""State files replaced whole: a write that fails leaves the old file and no temporary; a chief restarts after one."""

import contextlib
import errno
import os
import resource
import signal

import keras_tuner
import pytest

from lora_keras.runtime.atomic_files import replace_atomically, write_atomically
from tuners.search_space import SearchSpace
from tuners.strategies import make_oracle
from tuners.tuner import LoraTuner


def test_write_atomically_replaces_the_file_and_leaves_nothing_beside(tmp_path):
    path = tmp_path / "run_config.json"
    write_atomically(path, '{"rank": 1}')
    write_atomically(path, '{"rank": 2}')
    write_atomically(tmp_path / "adapter.safetensors", b"\x00\x01")
    assert path.read_text() == '{"rank": 2}' and (tmp_path / "adapter.safetensors").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["adapter.safetensors", "run_config.json"]


def test_a_write_that_raises_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("trial_id,val_loss\n0,1.5\n")
    with pytest.raises(OSError, match="No space left"):
        with replace_atomically(path) as temporary, open(temporary, "w") as handle:
            handle.write("trial_id,val_loss\n0,1.5\n1,")  # half of the new table, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_text() == "trial_id,val_loss\n0,1.5\n"
    assert os.listdir(tmp_path) == ["results.csv"]


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("{}")

    def refuse(source, target):
        raise PermissionError(errno.EACCES, "refused", str(target))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_atomically(path, '{"wall_time_s": 1.0}')
    assert path.read_text() == "{}" and os.listdir(tmp_path) == ["summary.json"]


@contextlib.contextmanager
def disk_full_after(size):
    """While inside: a file this process writes cannot grow past `size` bytes (EFBIG), as on a full disk.

    The limit is the kernel's (RLIMIT_FSIZE), so it stops keras-tuner's own writes exactly where it
    stops ours; SIGXFSZ, which would kill the process, is ignored meanwhile.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def chief_tuner(run_dir):
    """A chief's tuner over a grid of three ranks, as `serve_as_chief` builds it (no hypermodel)."""
    space = SearchSpace(ranks=(1, 2, 3), batch_sizes=(8,))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    oracle = make_oracle("grid", keras_tuner.Objective("val_loss", "min"), 3, hp, 0)
    return LoraTuner(oracle, run_dir, space, max_epochs=1, verbose=0)


def test_a_save_failing_mid_write_the_chief_still_restarts(tmp_path):
    """keras-tuner's own state (`oracle.json`, `trial.json`): its stock `save_json` truncates, then writes."""
    tuner = chief_tuner(tmp_path)
    tuner.save()
    first, second = tuner.oracle.create_trial("w1"), tuner.oracle.create_trial("w2")
    tuner.oracle.update_trial(first.trial_id, {"val_loss": 1.0})
    first.status = "COMPLETED"
    tuner.oracle.end_trial(first)
    oracle_json = tmp_path / "tuner" / "oracle.json"
    with disk_full_after(oracle_json.stat().st_size // 2):
        with pytest.raises(Exception, match="File too large"):  # EFBIG: an OSError (TensorFlow's own, stock)
            tuner.oracle.create_trial("w3")  # its trial.json stops half-way
    restarted = chief_tuner(tmp_path)
    assert sorted(restarted.oracle.trials) == sorted([first.trial_id, second.trial_id])
    assert restarted.oracle.trials[first.trial_id].status == "COMPLETED"
    assert not list(tmp_path.rglob("*.partial"))
