"""One run per run directory: `claim_run_dir` locks `run.lock` until the run ends; `overwrite` only under it."""

import os
import socket
import subprocess
import sys

import pytest

from lora_keras.cli import flag_message
from lora_keras.errors import InputError
from tuners.run_files import RUN_CONFIG_FILE, RUN_LOCK_FILE, claim_run_dir, write_run_files
from tuners.sweep_config import SweepConfig

ME = f"pid {os.getpid()} on {socket.gethostname()}"


def test_a_second_claim_is_refused_in_one_line_until_the_first_is_released(tmp_path):
    config = SweepConfig(logdir=str(tmp_path), name="run")
    with claim_run_dir(config):
        assert (config.run_dir / RUN_LOCK_FILE).read_text() == ME + "\n"
        with pytest.raises(InputError) as refused:
            claim_run_dir(config)  # a second open file: refused even in the same process
    assert refused.value.parameter == "name"
    assert flag_message(refused.value) == (f"--name: {config.run_dir} is in use by {ME}; "
                                           "wait for that run to end, or give another --name")
    claim_run_dir(config).release()  # free again


def test_overwrite_waits_for_the_lock_and_keeps_the_lock_file(tmp_path):
    config = SweepConfig(logdir=str(tmp_path), name="run")
    with claim_run_dir(config):
        write_run_files(config)
        (config.run_dir / "results.csv").write_text("trial_id\n0\n")
        with pytest.raises(InputError, match="is in use by"):
            claim_run_dir(SweepConfig(logdir=str(tmp_path), name="run", overwrite=True))
        assert (config.run_dir / "results.csv").is_file()  # the live run kept its files
    with claim_run_dir(SweepConfig(logdir=str(tmp_path), name="run", overwrite=True)):
        assert os.listdir(config.run_dir) == [RUN_LOCK_FILE]
    assert not (config.run_dir / RUN_CONFIG_FILE).exists()


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path):
    config = SweepConfig(logdir=str(tmp_path), name="run")
    with pytest.raises(InputError, match="no such file"):
        with claim_run_dir(config):
            raise InputError("train: no such file x.tsv; pass an existing .tsv file", parameter="train")
    assert not config.run_dir.exists()
    config.run_dir.mkdir()
    claim_run_dir(config).release()
    assert os.listdir(config.run_dir) == [RUN_LOCK_FILE]  # a directory it did not make stays


def test_a_killed_holder_frees_the_directory(tmp_path):
    """The lock is the kernel's: another process holds it while alive, nobody once it is killed."""
    config = SweepConfig(logdir=str(tmp_path), name="run")
    config.run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys\n"
         f"f = open({str(config.run_dir / RUN_LOCK_FILE)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "f.write('pid 4242 on host-a\\n'); f.flush(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(InputError, match="is in use by pid 4242 on host-a; wait for that run to end"):
            claim_run_dir(config)
    finally:
        holder.kill()
        holder.wait()
    with claim_run_dir(config):
        assert (config.run_dir / RUN_LOCK_FILE).read_text() == ME + "\n"


def test_a_plain_run_or_overwrite_is_refused_while_workers_hold_live_leases(tmp_path):
    """Workers of a chief that died still run their trials: only a restarted chief may take the run."""
    from tuners.cluster import Cluster
    from tuners.leases import LEASES_FILE, LeaseBook

    config = SweepConfig(logdir=str(tmp_path), name="run")
    book = LeaseBook(config.run_dir / "tuner" / LEASES_FILE, lease_s=60)
    book.hear("w1", "s1")
    book.hand_out("3", "w1", "w1", "s1")
    for other in (config, SweepConfig(logdir=str(tmp_path), name="run", overwrite=True)):
        with pytest.raises(InputError) as refused:
            claim_run_dir(other)
        assert str(refused.value).startswith(f"name: distributed workers still hold live leases in {config.run_dir}: "
                                             "trial 3 (w1, heard 0 s ago)")
    chief = SweepConfig(logdir=str(tmp_path), name="run", cluster=Cluster("chief", "127.0.0.1", 8000))
    claim_run_dir(chief).release()  # the chief takes the leases back
    assert (config.run_dir / "tuner" / LEASES_FILE).is_file()
    book.heard["s1"] -= 61  # the lease ran out: a plain run may resume, and drops the stale book
    book.save()
    claim_run_dir(config).release()
    assert not (config.run_dir / "tuner" / LEASES_FILE).exists()
