"""Distributed sweeps: a chief and two workers on 127.0.0.1 share one run; `--devices` mirrors a trial."""

import csv
import itertools
import json
import socket
import subprocess
import sys
import threading
import time

import keras_tuner
import pytest

from conftest import ROOT
from lora_keras.backends.devices import device_names
from lora_keras.errors import InputError
from test_tune_errors import assert_one_line_exit_2, load_tune
from tuners.cluster import Cluster
from tuners import oracle_server
from tuners.oracle_server import serve_oracle
from tuners.strategies import make_oracle
from tuners.failures import SweepStopped
from tuners.packing import Packing, PackScheduler
from tuners.roles import chief_error
from tuners.search_space import SearchSpace
from tuners.tuner import LoraTuner
from tuners.worker_client import LeasedOracleClient

RANKS, BATCH_SIZES = (1,), (8, 16)  # two trials of one LoRA config: each worker builds one model at most


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sweep_args(tiny_preset, tiny_corpus, logdir):
    train, val = tiny_corpus
    return ["--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English",
            "--target-lang", "Dravic", "--ranks", *RANKS, "--batch-sizes", *BATCH_SIZES, "--epochs", "1",
            "--logdir", logdir, "--name", "shared", "--max-train-examples", "8", "--max-val-examples", "8",
            "--max-target-length", "16", "--quiet"]


def read_rows(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def wait_for(condition, processes, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        assert all(p.poll() is None for p in processes.values()), "a process ended early"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def shared_run(tiny_preset, tiny_corpus, tmp_path_factory):
    """A chief and two workers, w1 mirroring each trial over two CPU devices; their exit codes and run dir.

    w2 starts once w1 has a trial, so the mirrored path always runs; w2 may then get the other
    trial or none, as a slow worker may. Every process is killed if the test fails before they end.
    """
    logdir = tmp_path_factory.mktemp("distributed")
    address = f"127.0.0.1:{free_port()}"
    args = [str(a) for a in sweep_args(tiny_preset, tiny_corpus, logdir)]
    roles = {
        "chief": ["--distributed", "chief", "--oracle-address", address],
        "w1": ["--distributed", "worker", "--oracle-address", address, "--worker-id", "w1", "--devices", "cpu:2"],
        "w2": ["--distributed", "worker", "--oracle-address", address, "--worker-id", "w2"],
    }
    processes = {}

    def start(name):
        with open(logdir / f"{name}.out", "w") as out, open(logdir / f"{name}.err", "w") as err:
            processes[name] = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "tune.py"), *args, *roles[name], "--chief-timeout", "120"],
                stdout=out, stderr=err, cwd=ROOT,
            )

    try:
        start("chief")
        start("w1")
        wait_for(lambda: list((logdir / "shared" / "tuner").glob("trial_*")), processes, 300)
        start("w2")
        codes = {name: process.wait(timeout=600) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    errors = {name: (logdir / f"{name}.err").read_text()[-2000:] for name in roles}
    return codes, errors, logdir / "shared"


@pytest.mark.e2e
def test_chief_and_two_workers_run_each_combination_once(shared_run):
    codes, errors, run_dir = shared_run
    assert codes == {"chief": 0, "w1": 0, "w2": 0}, errors
    rows = read_rows(run_dir)
    assert sorted((int(r["rank"]), int(r["batch_size"])) for r in rows) == sorted(itertools.product(RANKS, BATCH_SIZES))
    assert all(r["status"] == "COMPLETED" for r in rows) and len({r["trial_id"] for r in rows}) == 2
    # The chief saved its oracle after the last trial: a rerun sees no trial still running.
    assert json.loads((run_dir / "tuner" / "oracle.json").read_text())["ongoing_trials"] == {}


@pytest.mark.e2e
def test_workers_ran_the_trials_and_w1_mirrored_its_over_two_devices(shared_run):
    """What the design guarantees: every trial ran on a worker, never the chief; w1 (up first) ran one
    at least, each over two replicas; w2's, if it got any, on one."""
    _, _, run_dir = shared_run
    ran = {}
    for row in read_rows(run_dir):
        measured = json.loads((run_dir / "tuner" / f"trial_{row['trial_id']}" / "measurements.json").read_text())
        ran.setdefault(measured["tuner_id"], []).append(measured["num_replicas"])
    assert set(ran) <= {"w1", "w2"} and "w1" in ran
    assert set(ran["w1"]) == {2} and set(ran.get("w2", [1])) == {1}


@pytest.mark.e2e
def test_shared_run_dir_holds_every_trial_output_once(shared_run):
    _, _, run_dir = shared_run
    assert len(list((run_dir / "tensorboard").glob("trial_*"))) == 2
    assert len(list((run_dir / "adapters").glob("trial_*.safetensors"))) == 2
    baseline = json.loads((run_dir / "baseline.json").read_text())
    table = (run_dir / "results.md").read_text()
    assert f"val loss {baseline['val_loss']:.4g}" in table and "Best trial" in table
    assert (run_dir / "recommendations.md").is_file() and (run_dir / "loss_vs_rank.png").is_file()
    assert not list((run_dir / "tuner").glob("w*.json"))  # workers keep no tuner state of their own


@pytest.mark.e2e
def test_local_rerun_of_a_distributed_run_repeats_no_trial(shared_run, tiny_preset, tiny_corpus, capsys):
    codes, _, run_dir = shared_run
    before = read_rows(run_dir)
    load_tune().main([str(a) for a in sweep_args(tiny_preset, tiny_corpus, run_dir.parent)])
    assert "Running Trial" not in capsys.readouterr().out
    assert read_rows(run_dir) == before


def test_worker_without_a_chief_gives_up_with_one_line(tmp_path, capsys, monkeypatch):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.setenv(name, "")  # restored (unset) after the test: export() sets them
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as caught:
        load_tune().main(["--logdir", str(tmp_path), "--distributed", "worker", "--oracle-address", address,
                          "--chief-timeout", "1"])
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err, f"no chief answered at {address} within 1 s")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--distributed", "worker", "--oracle-address", "chief-host"], "must be HOST:PORT"),
        (["--distributed", "worker"], "--distributed worker needs --oracle-address"),
        (["--oracle-address", "h:1"], "--oracle-address needs --distributed"),
        (["--distributed", "chief", "--oracle-address", "h:1", "--devices", "2"], "--devices is for workers"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--overwrite"], "--overwrite is for the chief"),
        (["--distributed", "worker", "--oracle-address", "h:1", "--worker-id", "chief2"], "not the word 'chief'"),
    ],
)
def test_bad_distributed_flags_exit_2_with_one_line(extra, message, capsys):
    with pytest.raises(SystemExit) as caught:
        load_tune().main(extra)
    assert_one_line_exit_2(caught.value.code, capsys.readouterr().err, message)


def test_device_names():
    assert device_names("cpu:2", 0) == ["/cpu:0", "/cpu:1"]
    assert device_names("2", 4) == ["/gpu:0", "/gpu:1"]
    assert device_names("gpu:1,/device:GPU:3", 4) == ["/gpu:1", "/gpu:3"]
    for spec, gpus, message in [("2", 0, "this machine has no GPU"), ("gpu:2", 2, "only 2 GPU"),
                                ("gpu:0,gpu:0", 2, "named twice"), ("tpu:1", 2, "not understood"),
                                ("0", 1, "1 or more GPUs")]:
        with pytest.raises(InputError, match=message):
            device_names(spec, gpus)


def chief_tuner(run_dir, ranks, max_failures=3):
    """A chief's tuner over a grid of `ranks`, as `serve_as_chief` builds it (no hypermodel)."""
    space = SearchSpace(ranks=ranks, batch_sizes=(8,))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    oracle = make_oracle("grid", keras_tuner.Objective("val_loss", "min"), len(ranks), hp, 0)
    oracle.max_consecutive_failed_trials = max_failures
    return LoraTuner(oracle, run_dir, space, max_epochs=1, verbose=0)


TOKEN = "a-test-token"


def serve_in_thread(tuner, port, on_trial_end, lease_s=30.0):
    outcome = {}
    cluster = Cluster("chief", "127.0.0.1", port, lease_s=lease_s, token=TOKEN)

    def serve():
        try:
            serve_oracle(tuner.oracle, cluster, tuner.run_dir, on_trial_end)
        except Exception as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, outcome


def clients(oracle, port, *worker_ids, chief_timeout_s=30):
    """Workers' clients of the chief's oracle (`tuners.worker_client`), one per worker id."""
    return [LeasedOracleClient(oracle, Cluster("worker", "127.0.0.1", port, worker_id, chief_timeout_s, token=TOKEN))
            for worker_id in worker_ids]


def end(client, trial, status, val_loss=None):
    if val_loss is not None:
        client.update_trial(trial.trial_id, {"val_loss": val_loss})
    trial.status = status
    client.end_trial(trial)


def test_oracle_server_hands_each_trial_out_once_and_calls_back(tmp_path, monkeypatch):
    tuner = chief_tuner(tmp_path, ranks=(1, 2, 3))
    port, ended = free_port(), []
    thread, outcome = serve_in_thread(tuner, port, lambda: ended.append(len(tuner.trial_rows())))
    a, b = clients(tuner.oracle, port, "a", "b")
    first, second = a.create_trial("a"), b.create_trial("b")
    end(a, first, "COMPLETED", 1.0)
    third = a.create_trial("a")
    end(b, second, "COMPLETED", 2.0)
    assert b.create_trial("b").status == "IDLE"  # a's trial may yet come back (a lost lease): b waits
    end(a, third, "COMPLETED", 3.0)
    assert a.create_trial("a").status == "STOPPED" and b.create_trial("b").status == "STOPPED"
    thread.join(timeout=10)
    assert not thread.is_alive() and outcome == {}
    assert [t.hyperparameters.get("rank") for t in (first, second, third)] == [1, 2, 3]
    assert ended == [1, 2, 3]  # the tables after each trial saw every ended trial
    assert json.loads((tmp_path / "tuner" / "oracle.json").read_text())["ongoing_trials"] == {}


def test_a_worker_draws_its_pack_from_the_chief_and_the_chief_waits_for_its_extra_ids(tmp_path, monkeypatch):
    """A worker's pack companions come from the chief's oracle under `<id>~1`, `<id>~2` (tuners.packing)."""
    tuner = chief_tuner(tmp_path, ranks=(1, 2, 3))
    port, ended = free_port(), []
    thread, outcome = serve_in_thread(tuner, port, lambda: ended.append(len(tuner.trial_rows())))
    (client,) = clients(tuner.oracle, port, "w")
    scheduler = PackScheduler(client, "w", Packing(3), tuner.space, max_epochs=1)
    groups = list(scheduler.groups(client.create_trial("w")))
    assert [[trial.hyperparameters.get("rank") for trial in group] for group in groups] == [[1, 2, 3]]
    assert scheduler.used == ["w~1", "w~2"] and len({trial.trial_id for trial in groups[0]}) == 3
    for loss, trial in enumerate(groups[0]):
        end(client, trial, "COMPLETED", float(loss))
    assert ended == [1, 2, 3]
    assert client.create_trial("w").status == "STOPPED"
    thread.join(timeout=3 * oracle_server.POLL_S)
    assert thread.is_alive()  # the extra ids have not been told the search is over: the chief waits
    assert list(scheduler.release()) == [] and scheduler.stopped == {"w~1", "w~2"}
    thread.join(timeout=10)
    assert not thread.is_alive() and outcome == {}
    assert json.loads((tmp_path / "tuner" / "oracle.json").read_text())["ongoing_trials"] == {}


def test_oracle_server_stops_everyone_after_too_many_failures(tmp_path, monkeypatch):
    import grpc

    tuner = chief_tuner(tmp_path, ranks=(1, 2, 3), max_failures=2)
    port = free_port()
    thread, outcome = serve_in_thread(tuner, port, lambda: None)
    a, b = clients(tuner.oracle, port, "a", "b")
    first, second = a.create_trial("a"), b.create_trial("b")
    end(a, first, "FAILED")
    with pytest.raises(grpc.RpcError) as stopped:
        end(b, second, "FAILED")
    assert stopped.value.code() == grpc.StatusCode.ABORTED and "consecutive failures" in stopped.value.details()
    with pytest.raises(grpc.RpcError, match="consecutive failures"):
        a.create_trial("a")  # no new trial once the sweep stops
    thread.join(timeout=10)
    assert not thread.is_alive() and "consecutive failures" in str(outcome["error"])
    # What the worker says: one line.
    said = chief_error(Cluster("worker", "127.0.0.1", port, "b"), stopped.value)
    assert isinstance(said, SweepStopped) and "\n" not in str(said)
    assert str(said).startswith("the chief stopped the sweep: Number of consecutive failures exceeded the limit of 2")


def test_worker_that_loses_its_chief_says_so(monkeypatch):
    import grpc

    port = free_port()  # nobody serves here
    (client,) = clients(None, port, "w", chief_timeout_s=1)
    with pytest.raises(grpc.RpcError) as lost:
        client.create_trial("w")
    said = str(chief_error(Cluster("worker", "127.0.0.1", port, "w"), lost.value))
    assert said.startswith(f"lost the chief at 127.0.0.1:{port} (DEADLINE_EXCEEDED)") and "\n" not in said


def test_second_chief_on_a_busy_port_is_refused(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        tuner = chief_tuner(tmp_path, ranks=(1,))
        cluster = Cluster("chief", "127.0.0.1", busy.getsockname()[1], token=TOKEN)
        with pytest.raises(InputError, match="cannot listen there"):
            serve_oracle(tuner.oracle, cluster, tmp_path)


def test_cluster_exports_keras_tuner_environment(monkeypatch):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.setenv(name, "")
    Cluster("worker", "10.0.0.5", 8000, chief_timeout_s=7).export()
    import os

    assert os.environ["KERASTUNER_ORACLE_IP"] == "10.0.0.5" and os.environ["KERASTUNER_ORACLE_PORT"] == "8000"
    assert os.environ["KERASTUNER_TUNER_ID"].startswith("worker-")
    Cluster("chief", "0.0.0.0", 8000).export()
    assert os.environ["KERASTUNER_TUNER_ID"] == "chief"
