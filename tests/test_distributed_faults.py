"""Distributed sweeps when processes die: real chief and worker processes, killed, stopped and restarted.

Each test runs a four-trial grid (`--pack 1`: one trial at a time) on 127.0.0.1 with a short
lease and checks what the run directory and the exit codes say afterwards.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_distributed import free_port, read_rows, sweep_args

pytestmark = pytest.mark.e2e

GRID = ["--ranks", "1", "2", "--batch-sizes", "8", "16", "--pack", "1", "--epochs", "2"]
COMBINATIONS = {("1", "8"), ("1", "16"), ("2", "8"), ("2", "16")}


class Sweep:
    """A chief and workers of one run, started, signalled and waited for; all killed at the end."""

    def __init__(self, tiny_preset, tiny_corpus, logdir, lease_s):
        self.logdir = logdir
        self.run_dir = logdir / "shared"
        self.address = f"127.0.0.1:{free_port()}"
        args = [str(a) for a in sweep_args(tiny_preset, tiny_corpus, logdir)]
        # the last --ranks/--batch-sizes win over sweep_args' own
        self.args = [*args, *GRID, "--oracle-address", self.address, "--chief-timeout", "120"]
        self.lease_s = lease_s
        self.processes = {}

    def start(self, name):
        role = (["--distributed", "chief", "--lease-s", str(self.lease_s)] if name.startswith("chief")
                else ["--distributed", "worker", "--worker-id", name])
        with open(self.logdir / f"{name}.out", "w") as out, open(self.logdir / f"{name}.err", "w") as err:
            self.processes[name] = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "tune.py"), *self.args, *role],
                stdout=out, stderr=err, cwd=ROOT)

    def wait_for(self, condition, timeout_s=300, what="condition"):
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def attempt_dirs(self):
        return sorted(p.name for p in (self.run_dir / "attempts").glob("trial_*.*")) \
            if (self.run_dir / "attempts").is_dir() else []

    def signal(self, name, signum):
        os.kill(self.processes[name].pid, signum)

    def wait_all(self, timeout_s=600):
        return {name: process.wait(timeout=timeout_s) for name, process in self.processes.items()}

    def err(self, name):
        return (self.logdir / f"{name}.err").read_text()

    def measurements(self):
        return {path.parent.name.removeprefix("trial_"): json.loads(path.read_text())
                for path in (self.run_dir / "tuner").glob("trial_*/measurements.json")}

    def close(self):
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                process.kill()
                process.wait()


@pytest.fixture
def sweep(tiny_preset, tiny_corpus, tmp_path):
    def make(lease_s):
        made = Sweep(tiny_preset, tiny_corpus, tmp_path, lease_s)
        created.append(made)
        return made

    created = []
    yield make
    for made in created:
        made.close()


def assert_each_combination_completed_once(run_dir):
    rows = read_rows(run_dir)
    assert sorted((row["rank"], row["batch_size"]) for row in rows) == sorted(COMBINATIONS)
    assert {row["status"] for row in rows} == {"COMPLETED"}, [row["status"] for row in rows]
    sessions = [p for p in (run_dir / "tensorboard").glob("trial_*") if p.is_dir()]
    assert len(sessions) == len(COMBINATIONS)
    assert not (run_dir / "attempts").exists()  # no attempt's leftovers


def test_a_worker_killed_mid_trial_loses_it_to_the_next_worker(sweep):
    """kill -9 a worker mid-trial, start another: the chief exits 0 and the trial's worker is the second."""
    run = sweep(lease_s=3)
    run.start("chief")
    run.start("w1")
    run.wait_for(lambda: run.attempt_dirs(), what="w1's first trial")
    (killed,) = run.attempt_dirs()
    run.signal("w1", signal.SIGKILL)
    died = time.monotonic()
    run.start("w2")
    trial_id = killed.removeprefix("trial_").split(".")[0]
    run.wait_for(lambda: f"trial_{trial_id}.2" in run.attempt_dirs() or trial_id in run.measurements(),
                 what="the trial handed out again")
    print(f"trial {trial_id}: reassigned {time.monotonic() - died:.1f} s after w1 died (lease 3 s, w2 starting)")
    codes = run.wait_all()
    assert codes["chief"] == 0 and codes["w2"] == 0, run.err("chief")[-2000:] + run.err("w2")[-2000:]
    assert_each_combination_completed_once(run.run_dir)
    figures = run.measurements()[trial_id]
    assert figures["tuner_id"] == "w2" and figures["attempt"] == 2


def test_a_stopped_worker_past_its_lease_is_refused_and_leaves_the_others_files(sweep):
    """SIGSTOP a worker past its lease while another takes its trial; resumed, its result is refused."""
    run = sweep(lease_s=3)
    run.start("chief")
    run.start("w1")
    run.wait_for(lambda: run.attempt_dirs(), what="w1's first trial")
    (stopped,) = run.attempt_dirs()
    trial_id = stopped.removeprefix("trial_").split(".")[0]
    run.signal("w1", signal.SIGSTOP)
    run.start("w2")
    run.wait_for(lambda: f"trial_{trial_id}.2" in run.attempt_dirs(), what="w2 taking the trial")
    run.signal("w1", signal.SIGCONT)
    codes = run.wait_all()
    assert codes == {"chief": 0, "w1": 0, "w2": 0}, run.err("w1")[-2000:]
    assert f"Trial {trial_id}: the chief refused attempt 1" in run.err("w1")
    assert_each_combination_completed_once(run.run_dir)
    figures = run.measurements()[trial_id]
    assert figures["tuner_id"] == "w2" and figures["attempt"] == 2
    leases = json.loads((run.run_dir / "tuner" / "leases.json").read_text())
    assert leases["attempts"][trial_id] == 2 and leases["leases"] == []


def test_a_chief_killed_and_restarted_hands_no_trial_out_twice(sweep):
    """kill -9 the chief with two workers mid-run and start it again: every trial runs once."""
    run = sweep(lease_s=60)
    run.start("chief")
    run.start("w1")
    run.start("w2")
    run.wait_for(lambda: len(run.measurements()) >= 1 and run.attempt_dirs(), what="a trial ended, another running")
    run.signal("chief", signal.SIGKILL)
    run.processes["chief"].wait()
    time.sleep(1)
    run.start("chief-again")
    codes = run.wait_all()
    assert codes["chief"] == -signal.SIGKILL
    assert codes["chief-again"] == 0 and codes["w1"] == 0 and codes["w2"] == 0, run.err("chief-again")[-2000:]
    assert_each_combination_completed_once(run.run_dir)
    leases = json.loads((run.run_dir / "tuner" / "leases.json").read_text())
    assert set(leases["attempts"].values()) == {1}, leases["attempts"]  # no trial handed out twice
    assert {figures["attempt"] for figures in run.measurements().values()} == {1}
