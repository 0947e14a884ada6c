"""Leases in a distributed sweep: lost workers' trials go out again, stale attempts are refused, restarts hand nothing out twice.

In-process: the chief's servicer and its gRPC server on 127.0.0.1 with the worker's own client
(`tuners.worker_client`); a lease of a fraction of a second stands for a worker that died. What
needs real processes (kill -9, SIGSTOP, a chief killed and restarted) is in test_distributed.py.
"""

import json
import threading
import time

import grpc
import pytest
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.src import protos

from test_distributed import chief_tuner, free_port
from tuners import oracle_server
from tuners.cluster import Cluster
from tuners.failures import SweepStopped
from tuners.leases import ATTEMPT_KEY, LeaseBook, StaleAttempt, Superseded, live_leases
from tuners.oracle_server import serve_oracle
from tuners.trial_files import TrialFiles, UntrustedValue
from tuners.packing import IDLE_WAIT_S
from tuners.worker_client import LeasedOracleClient

TOKEN = "a-test-token"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lease_book_attempts_losses_and_fencing(tmp_path):
    clock = Clock()
    book = LeaseBook(tmp_path / "leases.json", lease_s=10, clock=clock)
    book.hear("w1", "s1")
    assert book.hand_out("0", "w1", "w1", "s1") == 1
    assert book.hand_out("0", "w1", "w1", "s1") == 1  # asking again is the same attempt
    book.check("0", "s1", 1)
    clock.now = 10.5
    book.hear("w2", "s2")
    assert [lease.trial_id for lease in book.expired()] == ["0"] and book.lost == {"0": 1}
    assert book.hand_out("0", "w2", "w2", "s2") == 2
    with pytest.raises(StaleAttempt, match="attempt 1 of trial 0 no longer holds it"):
        book.check("0", "s1", 1)
    book.hear("w2", "s3")  # a newer process with w2's id supersedes s2
    with pytest.raises(Superseded, match="its own --worker-id"):
        book.hear("w2", "s2")
    # Saved with wall-clock times: another process sees whether a worker was heard within the lease.
    saved = json.loads((tmp_path / "leases.json").read_text())
    assert saved["attempts"] == {"0": 2} and saved["leases"][0]["session"] == "s2"
    restored = LeaseBook(tmp_path / "leases.json", lease_s=10, clock=Clock())
    assert [(lease.trial_id, lease.attempt) for lease in restored.restore()] == [("0", 2)]


def test_live_leases_reads_how_long_ago_each_worker_was_heard(tmp_path):
    book = LeaseBook(tmp_path / "tuner" / "leases.json", lease_s=30)
    book.hear("w1", "s1")
    book.hand_out("4", "w1", "w1", "s1")
    (live,) = live_leases(tmp_path)
    assert live[0].trial_id == "4" and 0 <= live[1] < 5
    assert live_leases(tmp_path, now=time.time() + 31) == []


# -- the servicer, called directly -----------------------------------------------------------
class Context:
    """What a gRPC handler sees of a call: its metadata, and abort."""

    def __init__(self, worker, session, attempt=None, **extra):
        self.metadata = [("lora-keras-worker", worker), ("lora-keras-session", session), *extra.items()]
        if attempt is not None:
            self.metadata.append((ATTEMPT_KEY, str(attempt)))
        self.trailing = ()

    def invocation_metadata(self):
        return self.metadata

    def set_trailing_metadata(self, metadata):
        self.trailing = metadata

    def abort(self, code, details):
        raise Aborted(code, details)


class Aborted(Exception):
    def __init__(self, code, details):
        super().__init__(details)
        self.code = code


def servicer_on(tuner, run_dir, lease_s=10, clock=None):
    book = LeaseBook(run_dir / "tuner" / "leases.json", lease_s, clock=clock or Clock())
    return oracle_server._SweepServicer(tuner.oracle, run_dir, book, lambda: None)


def create(servicer, tuner_id, session):
    context = Context(tuner_id.split("~")[0], session)
    response = servicer.CreateTrial(protos.get_service().CreateTrialRequest(tuner_id=tuner_id), context)
    attempt = dict(context.trailing).get(ATTEMPT_KEY)
    return response.trial, None if attempt is None else int(attempt)


def end(servicer, worker, session, trial_proto, attempt, status="COMPLETED", val_loss=1.0, reason=None):
    servicer.UpdateTrial(protos.get_service().UpdateTrialRequest(
        trial_id=trial_proto.trial_id, metrics={"val_loss": val_loss}), Context(worker, session, attempt))
    from keras_tuner.engine.trial import Trial

    trial = Trial.from_proto(trial_proto)
    trial.status = status
    extra = {} if reason is None else {"lora-keras-reason-bin": reason.encode()}
    servicer.EndTrial(protos.get_service().EndTrialRequest(trial=trial.to_proto()),
                      Context(worker, session, attempt, **extra))


def test_a_lost_workers_trial_goes_out_again_and_its_late_report_changes_nothing(tmp_path):
    clock = Clock()
    tuner = chief_tuner(tmp_path, ranks=(1,))
    servicer = servicer_on(tuner, tmp_path, lease_s=10, clock=clock)
    trial, attempt = create(servicer, "a", "sa")
    assert (trial.trial_id, attempt) == ("0", 1)
    # While a holds the only trial, b is told to wait, not that the search is over.
    idle, _ = create(servicer, "b", "sb")
    assert idle.status == protos.get_proto().TrialStatus.Value("IDLE") and not servicer.stop_triggered
    clock.now = 11  # a silent past its lease
    servicer.Heartbeat({}, Context("b", "sb"))
    servicer.expire()
    again, attempt = create(servicer, "b", "sb")
    assert (again.trial_id, attempt) == ("0", 2)
    # Both attempts wrote their files; only the accepted one's end up in place.
    for number, text in ((1, "a's"), (2, "b's")):
        staged = TrialFiles(tmp_path, "0", number).staged_measurements
        staged.parent.mkdir(parents=True)
        staged.write_text(text)
    with pytest.raises(Aborted) as refused:
        end(servicer, "a", "sa", trial, 1, val_loss=0.5)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert tuner.oracle.trials["0"].metrics.exists("val_loss") is False  # a's late metric changed nothing
    end(servicer, "b", "sb", again, 2, val_loss=2.0)
    assert TrialFiles(tmp_path, "0").measurements.read_text() == "b's"
    assert TrialFiles(tmp_path, "0", 1).staged_measurements.read_text() == "a's"  # a drops its own
    assert tuner.oracle.trials["0"].metrics.get_last_value("val_loss") == 2.0
    with pytest.raises(Aborted):  # a's end, even later: refused as well
        end(servicer, "a", "sa", trial, 1)
    assert tuner.oracle.trials["0"].status == TrialStatus.COMPLETED


def test_two_lost_attempts_fail_the_trial_as_worker_lost_and_the_sweep_goes_on(tmp_path):
    clock = Clock()
    tuner = chief_tuner(tmp_path, ranks=(1, 2))
    servicer = servicer_on(tuner, tmp_path, lease_s=10, clock=clock)
    assert create(servicer, "a", "sa")[0].trial_id == "0"
    clock.now = 11
    servicer.expire()
    assert create(servicer, "b", "sb")[0].trial_id == "0"
    clock.now = 22
    servicer.expire()
    (row,) = tuner.trial_rows()
    assert row["status"] == "FAILED: WorkerLost: worker b not heard from for 10 s (attempt 2); 2 attempts lost"
    trial, attempt = create(servicer, "c", "sc")
    assert (trial.trial_id, attempt) == ("1", 1)
    end(servicer, "c", "sc", trial, 1)
    assert create(servicer, "c", "sc")[0].status == protos.get_proto().TrialStatus.Value("STOPPED")
    assert servicer.finished  # a and b, silent, are not waited for


def test_a_restarted_chief_takes_the_leases_back_and_hands_nothing_out_twice(tmp_path):
    tuner = chief_tuner(tmp_path, ranks=(1, 2, 3))
    servicer = servicer_on(tuner, tmp_path)
    first, _ = create(servicer, "a", "sa")
    second, _ = create(servicer, "b", "sb")
    # The chief is killed; the same command builds it again on the run directory.
    tuner = chief_tuner(tmp_path, ranks=(1, 2, 3))
    assert sorted(tuner.oracle._retry_queue) == ["0", "1"]  # keras-tuner's reload would hand both out again
    servicer = servicer_on(tuner, tmp_path)
    assert tuner.oracle._retry_queue == [] and set(tuner.oracle.ongoing_trials) == {"a", "b"}
    third, attempt = create(servicer, "c", "sc")
    assert (third.trial_id, attempt) == ("2", 1)
    assert create(servicer, "c2", "sc2")[0].status == protos.get_proto().TrialStatus.Value("IDLE")
    end(servicer, "a", "sa", first, 1)  # the workers carry on with the attempts they hold
    end(servicer, "b", "sb", second, 1)
    end(servicer, "c", "sc", third, 1)
    assert [trial.status for trial in tuner.oracle.trials.values()] == [TrialStatus.COMPLETED] * 3
    assert create(servicer, "a", "sa")[0].status == protos.get_proto().TrialStatus.Value("STOPPED")
    # A completed trial left in keras-tuner's retry queue by an earlier restart is dropped, not run again.
    tuner.oracle._retry_queue = ["0", "0"]
    tuner.oracle.save()
    servicer_on(chief_tuner(tmp_path, ranks=(1, 2, 3)), tmp_path)
    assert json.loads((tmp_path / "tuner" / "oracle.json").read_text())["retry_queue"] == []


def test_a_call_without_a_worker_session_or_from_a_superseded_process_is_refused(tmp_path):
    tuner = chief_tuner(tmp_path, ranks=(1,))
    servicer = servicer_on(tuner, tmp_path)
    with pytest.raises(Aborted) as anonymous:
        servicer.CreateTrial(protos.get_service().CreateTrialRequest(tuner_id="a"), Context("", ""))
    assert anonymous.value.code == grpc.StatusCode.FAILED_PRECONDITION and tuner.oracle.trials == {}
    trial, _ = create(servicer, "a", "old")
    again, attempt = create(servicer, "a", "new")  # a restarted worker with the same id takes its trial back
    assert (again.trial_id, attempt) == (trial.trial_id, 2)
    with pytest.raises(Aborted) as superseded:
        create(servicer, "a", "old")
    assert superseded.value.code == grpc.StatusCode.ALREADY_EXISTS


# -- over gRPC, with the worker's client ---------------------------------------------------
def serve(tuner, run_dir, lease_s=30.0):
    port = free_port()
    cluster = Cluster("chief", "127.0.0.1", port, lease_s=lease_s, token=TOKEN)
    outcome = {}

    def run():
        try:
            serve_oracle(tuner.oracle, cluster, run_dir, lambda: None)
        except Exception as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread, outcome


def worker(oracle, port, worker_id, token=TOKEN):
    cluster = Cluster("worker", "127.0.0.1", port, worker_id=worker_id, chief_timeout_s=20, token=token)
    return LeasedOracleClient(oracle, cluster)


def test_a_worker_silent_past_its_lease_loses_its_trial_over_grpc(tmp_path):
    tuner = chief_tuner(tmp_path, ranks=(1,))
    port, thread, outcome = serve(tuner, tmp_path, lease_s=1.0)
    a, b = worker(tuner.oracle, port, "a"), worker(tuner.oracle, port, "b")
    trial = a.create_trial("a")
    a.stopped.set()  # a's heartbeat stops, as a stopped process's would
    started = time.monotonic()
    again, idle_answers = b.create_trial("b"), 0
    while again.status == TrialStatus.IDLE:  # paced by the client: one call a second, no busy loop
        idle_answers += 1
        again = b.create_trial("b")
    took = time.monotonic() - started
    assert again.trial_id == trial.trial_id and b.attempt(again.trial_id) == 2 and 1.0 <= took < 5
    assert 1 <= idle_answers <= took / IDLE_WAIT_S
    a.update_trial(trial.trial_id, {"val_loss": 0.1})
    a.end_trial(trial)
    assert a.was_refused(trial.trial_id) and "no longer holds it" in a.refused[trial.trial_id]
    b.update_trial(again.trial_id, {"val_loss": 2.0})
    again.status = TrialStatus.COMPLETED
    b.end_trial(again)
    for client in (a, b):
        assert client.create_trial(client.tuner_id).status == TrialStatus.STOPPED
        client.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and outcome == {}
    assert tuner.oracle.trials["0"].metrics.get_last_value("val_loss") == 2.0


def test_a_failed_trials_reason_reaches_the_chiefs_rows(tmp_path):
    tuner = chief_tuner(tmp_path, ranks=(1,))
    port, thread, outcome = serve(tuner, tmp_path)
    client = worker(tuner.oracle, port, "w")
    trial = client.create_trial("w")
    trial.status = TrialStatus.FAILED
    trial.message = ("Traceback (most recent call last):\n  ...\n"
                     "keras_tuner.errors.FailedTrialError: out of memory (OOM when allocating); try a smaller batch")
    client.end_trial(trial)
    assert client.create_trial("w").status == TrialStatus.STOPPED
    client.close()
    thread.join(timeout=10)
    (row,) = tuner.trial_rows()
    assert row["status"] == "FAILED: FailedTrialError: out of memory (OOM when allocating); try a smaller batch"


def test_every_call_without_the_token_is_unauthenticated_and_changes_nothing(tmp_path):
    tuner = chief_tuner(tmp_path, ranks=(1, 2))
    port, thread, outcome = serve(tuner, tmp_path)
    good = worker(tuner.oracle, port, "w")
    trial = good.create_trial("w")
    before = (tmp_path / "tuner" / "oracle.json").read_text(), (tmp_path / "tuner" / "trial_0" / "trial.json").read_text()
    service, proto = protos.get_service(), protos.get_proto()
    calls = {
        "GetSpace": service.GetSpaceRequest(),
        "UpdateSpace": service.UpdateSpaceRequest(hyperparameters=tuner.oracle.get_space().to_proto()),
        "CreateTrial": service.CreateTrialRequest(tuner_id="intruder"),
        "UpdateTrial": service.UpdateTrialRequest(trial_id="0", metrics={"val_loss": 0.0}),
        "EndTrial": service.EndTrialRequest(trial=proto.Trial(trial_id="0", status=proto.TrialStatus.Value("FAILED"))),
        "GetTrial": service.GetTrialRequest(trial_id="0"),
        "GetBestTrials": service.GetBestTrialsRequest(num_trials=1),
    }
    from tuners.oracle_security import authenticated_channel

    for label, channel in (("no token", grpc.insecure_channel(f"127.0.0.1:{port}")),
                           ("wrong token", authenticated_channel(f"127.0.0.1:{port}", "not-the-token"))):
        stub = protos.get_service_grpc().OracleStub(channel)
        for name, request in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                getattr(stub, name)(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (label, name)
        channel.close()
    after = (tmp_path / "tuner" / "oracle.json").read_text(), (tmp_path / "tuner" / "trial_0" / "trial.json").read_text()
    assert after == before and set(tuner.oracle.trials) == {"0"}
    good.update_trial(trial.trial_id, {"val_loss": 1.0})
    trial.status = TrialStatus.COMPLETED
    good.end_trial(trial)
    second = good.create_trial("w")
    second.status = TrialStatus.FAILED
    good.end_trial(second)
    assert good.create_trial("w").status == TrialStatus.STOPPED
    good.close()
    thread.join(timeout=10)
    assert outcome == {}


def test_a_trial_id_that_is_a_path_is_refused_by_the_worker(tmp_path):
    """A fake chief (keras-tuner's plain servicer) hands out `0/../../x`: the worker stops before any path."""
    from concurrent import futures

    from keras_tuner.src.distribute import oracle_chief

    class FakeChief(oracle_chief.OracleServicer):
        def CreateTrial(self, request, context):
            trial = protos.get_proto().Trial(trial_id="0/../../x", status=protos.get_proto().TrialStatus.Value("RUNNING"))
            return protos.get_service().CreateTrialResponse(trial=trial)

    outside = tmp_path / "x"
    outside.mkdir()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(FakeChief(None), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        client = worker(None, port, "w")
        with pytest.raises(SweepStopped, match=r"sent the trial id '0/\.\./\.\./x', which is not one"):
            client.create_trial("w")
        client.close()
    finally:
        server.stop(0)
    assert outside.is_dir()
    with pytest.raises(UntrustedValue):
        TrialFiles(tmp_path / "run", "0/../../x")


def test_two_live_workers_given_one_id_the_older_stops_with_one_line(tmp_path):
    from lora_keras.errors import InputError
    from tuners.roles import chief_error

    tuner = chief_tuner(tmp_path, ranks=(1, 2))
    port, thread, outcome = serve(tuner, tmp_path)
    older = worker(tuner.oracle, port, "w1")
    first = older.create_trial("w1")
    newer = worker(tuner.oracle, port, "w1")  # same --worker-id, another process
    assert newer.create_trial("w1").trial_id == first.trial_id and newer.attempt(first.trial_id) == 2
    with pytest.raises(grpc.RpcError) as refused:
        older.get_space()
    said = chief_error(older.cluster, refused.value)
    assert isinstance(said, InputError) and "\n" not in str(said)
    assert str(said).startswith("worker_id 'w1': a newer worker process took this id over")
    older.close()
    newer.close()


# -- a chief killed at any write -------------------------------------------------------------
class Killed(BaseException):
    """The chief process dies here: nothing after this point in the call happens."""


class KillAtWrite:
    """Kill the chief before its `kill_at`-th file write (keras-tuner's state files and the lease book)."""

    def __init__(self, monkeypatch, kill_at):
        from lora_keras.runtime import atomic_files
        from tuners import atomic_state

        self.kill_at, self.writes = kill_at, 0
        real = atomic_files.write_atomically

        def write(path, data):
            self.writes += 1
            if self.writes == self.kill_at:
                raise Killed(path)
            real(path, data)

        monkeypatch.setattr(atomic_files, "write_atomically", write)
        monkeypatch.setattr(atomic_state, "write_atomically", write)


def sweep_with_one_kill(run_dir, kill_write=None, lose_answer_of_call=None, monkeypatch=None):
    """Two workers run a three-trial grid through the servicer; the chief dies once and the same command restarts it.

    A worker whose call the kill interrupted (or whose answer was lost) asks again, as the worker
    client does while the chief is away. Returns the restarts, each trial's handed-out attempts and
    any refusals.
    """
    ranks = (1, 2, 3)
    if kill_write is not None:
        KillAtWrite(monkeypatch, kill_write)
    restarts = 0

    def start_chief():
        nonlocal restarts
        while True:
            try:
                return servicer_on(chief_tuner(run_dir, ranks), run_dir)
            except Killed:  # killed while it started: started again
                restarts += 1

    servicer = start_chief()
    # Each worker: ask for a trial; report its metric; end it (after writing its staged files).
    workers = {name: {"session": f"s{name}", "trial": None, "step": "create", "done": False} for name in "ab"}
    handed, refused, calls = [], [], 0
    while not all(w["done"] for w in workers.values()):
        for name, w in workers.items():
            if w["done"]:
                continue
            calls += 1
            while True:  # the same call until a chief answers it
                try:
                    if w["step"] == "create":
                        trial, attempt = create(servicer, name, w["session"])
                    else:
                        trial, attempt = w["trial"]
                        context = Context(name, w["session"], attempt)
                        if w["step"] == "update":
                            servicer.UpdateTrial(protos.get_service().UpdateTrialRequest(
                                trial_id=trial.trial_id, metrics={"val_loss": 1.0}), context)
                        else:
                            staged = TrialFiles(run_dir, trial.trial_id, attempt).staged_measurements
                            staged.parent.mkdir(parents=True, exist_ok=True)
                            staged.write_text(json.dumps({"val_loss": 1.0, "tuner_id": name, "attempt": attempt}))
                            ended = Trial.from_proto(trial)
                            ended.status = TrialStatus.COMPLETED
                            servicer.EndTrial(protos.get_service().EndTrialRequest(trial=ended.to_proto()), context)
                    if calls == lose_answer_of_call:
                        lose_answer_of_call = None
                        raise Killed("after the call, before its answer")
                    break
                except Killed:
                    restarts += 1
                    servicer = start_chief()
                except Aborted as error:
                    assert error.code == grpc.StatusCode.FAILED_PRECONDITION, error
                    refused.append((name, w["trial"][0].trial_id))
                    w["step"] = "refused"
                    break
            if w["step"] == "create":
                status = TrialStatus.from_proto(trial.status)
                if status == TrialStatus.RUNNING:
                    handed.append((trial.trial_id, attempt))
                    w["trial"], w["step"] = (trial, attempt), "update"
                elif status == TrialStatus.STOPPED:
                    w["done"] = True
            elif w["step"] == "update":
                w["step"] = "end"
            else:
                w["trial"], w["step"] = None, "create"
    return servicer, sorted(set(handed)), refused, restarts


def assert_each_trial_ran_once(run_dir, servicer, handed, refused):
    rows = chief_tuner(run_dir, (1, 2, 3)).trial_rows()
    assert sorted(row["rank"] for row in rows) == [1, 2, 3] and {row["status"] for row in rows} == {"COMPLETED"}, rows
    assert handed == [("0", 1), ("1", 1), ("2", 1)] and refused == []
    assert all(row["attempt"] == 1 for row in rows)
    assert servicer.finished


def test_without_a_kill_the_scripted_sweep_runs_each_trial_once(tmp_path):
    servicer, handed, refused, restarts = sweep_with_one_kill(tmp_path)
    assert restarts == 0
    assert_each_trial_ran_once(tmp_path, servicer, handed, refused)


WRITES_IN_THE_SWEEP = 30  # more than it makes (WRITES_MADE): every write is a kill point once


@pytest.mark.parametrize("kill_write", range(1, WRITES_IN_THE_SWEEP + 1))
def test_a_chief_killed_before_any_of_its_writes_loses_no_trial_and_runs_none_twice(tmp_path, monkeypatch, kill_write):
    """kill -9 at every write the chief makes (trial.json, oracle.json, leases.json): a restart resumes exactly."""
    servicer, handed, refused, restarts = sweep_with_one_kill(tmp_path, kill_write=kill_write, monkeypatch=monkeypatch)
    assert_each_trial_ran_once(tmp_path, servicer, handed, refused)
    assert restarts == (1 if kill_write <= WRITES_MADE else 0)


WRITES_MADE = 26  # by the sweep without a kill: 2 at start, 3 per trial handed out, 5 per trial ended


@pytest.mark.parametrize("call", range(1, 15))
def test_a_chief_killed_after_a_call_before_its_answer_loses_no_trial_and_runs_none_twice(tmp_path, call):
    servicer, handed, refused, restarts = sweep_with_one_kill(tmp_path, lose_answer_of_call=call)
    assert_each_trial_ran_once(tmp_path, servicer, handed, refused)
