"""A worker's side of the chief's oracle: keras-tuner's `OracleClient` calls, leased and authenticated.

Every call carries the oracle token, the worker's id and its process's session (drawn at start),
and waits up to `chief_timeout_s` for a chief that is away (restarting). On top of keras-tuner's:

* each trial handed out comes with its attempt number, which every report on it carries;
* a report the chief refuses (the attempt lost its lease and the trial went to another worker)
  marks the trial refused: the tuner drops the attempt's files instead of stopping;
* a heartbeat thread tells the chief the process is alive, as often as the chief asks;
* an IDLE answer is paced (no busy loop), and a trial id that is not one is refused before it
  reaches a path (`tuners.trial_files.check_trial_id`).

Example:
```python
client = LeasedOracleClient(oracle, cluster)       # cluster.token set; starts the heartbeat
trial = client.create_trial(cluster.worker_id)
client.attempt(trial.trial_id)                      # 1, or more for a trial taken back from a lost worker
client.was_refused(trial.trial_id)                  # after the reports: True if another attempt holds it
```
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import grpc
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.src import protos  # private: keras-tuner is pinned (setup.cfg)
from keras_tuner.src.distribute import oracle_client

from tuners.cluster import Cluster
from tuners.failures import failure_reason
from tuners.leases import ATTEMPT_KEY, HEARTBEAT_METHOD, REASON_KEY, SESSION_KEY, WORKER_KEY
from tuners.packing import IDLE_WAIT_S
from tuners.trial_files import UntrustedValue, check_trial_id

FIRST_HEARTBEAT_S = 2.0  # until the chief says how often
MAX_REASON_CHARS = 1000


class LeasedOracleClient(oracle_client.OracleClient):
    """keras-tuner's worker-side oracle, with leases, attempts, a heartbeat and the token.

    Args:
        oracle: the worker's local oracle (keras-tuner reads a few settings from it).
        cluster: the worker's part: the chief's address, `token`, `tls`, `worker_id`, `chief_timeout_s`.

    Example: `LeasedOracleClient(oracle, cluster).create_trial("w1")`.
    """

    paces_idle = True  # `tuners.packing.PackScheduler` need not wait after an IDLE answer itself

    def __init__(self, oracle, cluster: Cluster):
        self._oracle = oracle
        self.cluster = cluster
        self.tuner_id = cluster.worker_id
        self.session = uuid.uuid4().hex
        self.multi_worker = False
        self.should_report = True
        self.channel = cluster.channel(metadata=((WORKER_KEY, cluster.worker_id), (SESSION_KEY, self.session)))
        self.stub = protos.get_service_grpc().OracleStub(self.channel)
        self.heartbeat_call = self.channel.unary_unary(
            HEARTBEAT_METHOD, request_serializer=lambda r: json.dumps(r).encode(), response_deserializer=json.loads)
        self.attempts: dict[str, int] = {}
        self.refused: dict[str, str] = {}  # trial id -> the chief's reason
        self.stopped = threading.Event()
        self.heartbeat_error: grpc.RpcError | None = None
        self._heartbeat = threading.Thread(target=self._beat, name="lora-keras-heartbeat", daemon=True)
        self._heartbeat.start()

    def attempt(self, trial_id: str) -> int:
        """The attempt number the chief gave this process for `trial_id`."""
        return self.attempts.get(trial_id, 1)

    def was_refused(self, trial_id: str) -> bool:
        """Whether the chief refused a report on `trial_id` (another attempt holds it)."""
        return trial_id in self.refused

    def close(self) -> None:
        """Stop the heartbeat and close the channel."""
        self.stopped.set()
        self._heartbeat.join(timeout=5)
        self.channel.close()

    # -- keras-tuner's calls -------------------------------------------------------------------
    def get_space(self):
        from keras_tuner.engine.hyperparameters import HyperParameters

        response, _ = self._call(self.stub.GetSpace, protos.get_service().GetSpaceRequest())
        return HyperParameters.from_proto(response.hyperparameters)

    def update_space(self, hyperparameters):
        self._call(self.stub.UpdateSpace,
                   protos.get_service().UpdateSpaceRequest(hyperparameters=hyperparameters.to_proto()))

    def create_trial(self, tuner_id):
        response, call = self._call(self.stub.CreateTrial, protos.get_service().CreateTrialRequest(tuner_id=tuner_id))
        trial = Trial.from_proto(response.trial)
        if trial.status == TrialStatus.RUNNING:
            self._check_trial(trial)
            attempt = dict(call.trailing_metadata() or ()).get(ATTEMPT_KEY, "1")
            self.attempts[trial.trial_id] = int(attempt) if str(attempt).isdigit() else 1
            self.refused.pop(trial.trial_id, None)
        elif trial.status == TrialStatus.IDLE:
            time.sleep(IDLE_WAIT_S)  # keras-tuner's loop asks again at once
        return trial

    def update_trial(self, trial_id, metrics, step=0):
        if trial_id not in self.refused:
            try:
                response, _ = self._call(
                    self.stub.UpdateTrial,
                    protos.get_service().UpdateTrialRequest(trial_id=trial_id, metrics=metrics, step=step),
                    self._attempt_metadata(trial_id))
                return Trial.from_proto(response.trial)
            except grpc.RpcError as error:
                self._refused_or_raise(trial_id, error)
        return Trial(self._oracle.get_space(), trial_id=trial_id, status=TrialStatus.RUNNING)

    def end_trial(self, trial):
        if trial.trial_id in self.refused:
            return
        metadata = self._attempt_metadata(trial.trial_id)
        if trial.message:
            reason = failure_reason(trial.message)[:MAX_REASON_CHARS]
            metadata += ((REASON_KEY, reason.encode("utf-8")),)
        try:
            self._call(self.stub.EndTrial, protos.get_service().EndTrialRequest(trial=trial.to_proto()), metadata)
        except grpc.RpcError as error:
            self._refused_or_raise(trial.trial_id, error)

    def get_trial(self, trial_id):
        response, _ = self._call(self.stub.GetTrial, protos.get_service().GetTrialRequest(trial_id=trial_id))
        return Trial.from_proto(response.trial)

    def get_best_trials(self, num_trials=1):
        response, _ = self._call(self.stub.GetBestTrials,
                                 protos.get_service().GetBestTrialsRequest(num_trials=num_trials))
        return [Trial.from_proto(trial) for trial in response.trials]

    # -- ours ----------------------------------------------------------------------------------
    def _attempt_metadata(self, trial_id):
        return ((ATTEMPT_KEY, str(self.attempt(trial_id))),)

    def _refused_or_raise(self, trial_id, error):
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise error
        self.refused[trial_id] = error.details()

    def _call(self, method, request, metadata=()):
        """`(response, call)` of one call; waits for a chief that is away, up to `chief_timeout_s` in all."""
        if self.heartbeat_error is not None:
            raise self.heartbeat_error
        deadline = time.monotonic() + self.cluster.chief_timeout_s
        while True:
            try:
                return method.with_call(request, metadata=metadata, wait_for_ready=True,
                                        timeout=max(0.1, deadline - time.monotonic()))
            except grpc.RpcError as error:
                # A chief killed during the call: the call failed, not the wait; ask again while there is time.
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _check_trial(self, trial):
        """Refuse a trial whose id, or whose parent's id, is not a trial id (it would reach a path)."""
        from tuners.failures import SweepStopped

        try:
            check_trial_id(trial.trial_id, f"the chief at {self.cluster.address}")
            parent = trial.hyperparameters.values.get("tuner/trial_id")
            if parent is not None:
                check_trial_id(parent, f"the chief at {self.cluster.address}")
        except UntrustedValue as error:
            raise SweepStopped(f"{error}; refused it and stopped: is that address your chief?") from None

    def _beat(self):
        """Tell the chief this process is alive until closed; a refusal is kept for the next call to raise."""
        interval = FIRST_HEARTBEAT_S
        while not self.stopped.is_set():
            try:
                answer = self.heartbeat_call({}, timeout=max(interval, 1.0), wait_for_ready=True)
                interval = float(answer.get("interval_s", interval))
            except grpc.RpcError as error:
                if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ALREADY_EXISTS):
                    self.heartbeat_error = error
                    return
            self.stopped.wait(interval)
