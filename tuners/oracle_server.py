"""The chief's job in a distributed sweep: serve the oracle to the workers, leased, authenticated.

It serves keras-tuner's own `OracleServicer` protocol (so keras-tuner's calls are unchanged) with:

* **a token** on every call, checked by `tuners.oracle_security.TokenInterceptor` before any
  handler runs; TLS when the cluster has certificates; listening only on a loopback or private
  address unless told otherwise (`check_bind_address`);
* **leases** (`tuners.leases`): every trial handed out is leased to the worker process that asked,
  with an attempt number it gets back in the answer's metadata; a worker silent for `lease_s`
  loses its trials, which go out again (after `MAX_LOST_ATTEMPTS`, the trial fails: "worker
  lost"); a report from an attempt that no longer holds its trial is refused (FAILED_PRECONDITION)
  and changes nothing; while a trial is leased, a worker with nothing to do is told to wait
  (IDLE), not that the search is over, since the trial may come back;
* **the accepted attempt's files** moved into place when it ends (`tuners.trial_files`), and a
  failed trial's reason, which keras-tuner's Trial proto cannot carry, read from the call;
* **a restart that hands nothing out twice**: the leases a previous chief saved are taken back
  (keras-tuner's `reload` would queue every running trial again);
* a callback after every ended trial, and a clean stop when the search is over or the oracle
  stops it (too many failed trials in a row).

Every handler and every lease check runs on the server's one thread, the only one that
changes the oracle: keras-tuner's oracle lock is never released once `end_trial` raised, and
another thread asking the oracle would wait forever.

Example:
```python
serve_oracle(tuner.oracle, cluster, run_dir, on_trial_end=lambda: write_tables(tuner))  # returns when it is over
```
"""

from __future__ import annotations

import datetime
import json
import pathlib
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.src import protos  # private: keras-tuner is pinned (setup.cfg)
from keras_tuner.src.distribute import oracle_chief

from tuners.cluster import Cluster
from tuners.failures import is_failure_limit
from tuners.leases import (
    ATTEMPT_KEY, HEARTBEAT_METHOD, LEASES_FILE, MAX_LOST_ATTEMPTS, REASON_KEY, SESSION_KEY, WORKER_KEY, LeaseBook,
    StaleAttempt, Superseded,
)
from tuners.oracle_security import TokenInterceptor, check_bind_address
from tuners.trial_files import TrialFiles

POLL_S = 0.5
STOP_GRACE_S = 5
_RETRYABLE = (TrialStatus.RUNNING, TrialStatus.INVALID)


class _SweepServicer(oracle_chief.OracleServicer):
    """keras-tuner's servicer with leases, attempts, the accepted attempt's files and `on_trial_end`."""

    def __init__(self, oracle, run_dir: pathlib.Path, leases: LeaseBook, on_trial_end):
        super().__init__(oracle)
        self.run_dir = pathlib.Path(run_dir)
        self.leases = leases
        self.on_trial_end = on_trial_end
        self.failure = None
        self.finished = False
        self._restore()

    # -- keras-tuner's calls -------------------------------------------------------------------
    def CreateTrial(self, request, context: grpc.ServicerContext):  # gRPC method names
        """A trial for the tuner id, leased to the calling process; IDLE while others hold trials that may return."""
        try:
            worker, session, _ = self._caller(context)
            self.leases.asked(request.tuner_id, session)
            if self.failure is not None:  # the sweep is stopping: no new trials
                self.oracle.tuner_ids.discard(request.tuner_id)
                context.abort(grpc.StatusCode.ABORTED, str(self.failure))
            trial = self.oracle.create_trial(request.tuner_id)
            if trial.status == TrialStatus.RUNNING:
                attempt = self.leases.hand_out(trial.trial_id, request.tuner_id, worker, session)
                context.set_trailing_metadata(((ATTEMPT_KEY, str(attempt)),))
            elif trial.status == TrialStatus.STOPPED and self.oracle.ongoing_trials:
                # A trial another worker holds may come back to the queue (a lost lease): wait for it.
                self.oracle.tuner_ids.add(request.tuner_id)
                trial = Trial(self.oracle.get_space(), status=TrialStatus.IDLE)
            elif trial.status == TrialStatus.STOPPED:
                self.stop_triggered = True
            return protos.get_service().CreateTrialResponse(trial=trial.to_proto())
        finally:
            self._check_finished()

    def UpdateTrial(self, request, context: grpc.ServicerContext):
        """keras-tuner's, for the attempt that holds the trial only."""
        _, session, metadata = self._caller(context)
        self._holding(request.trial_id, session, metadata, context)
        return super().UpdateTrial(request, context)

    def EndTrial(self, request, context: grpc.ServicerContext):
        """For the attempt that holds the trial: its files into place, its reason kept, then keras-tuner's end."""
        try:
            _, session, metadata = self._caller(context)
            trial = Trial.from_proto(request.trial)
            if self.leases.ended_by(trial.trial_id, session, _attempt(metadata)):
                return protos.get_service().EndTrialResponse()  # asked again: a chief before this one ended it
            lease = self._holding(trial.trial_id, session, metadata, context)
            TrialFiles(self.run_dir, trial.trial_id, lease.attempt).commit()
            reason = metadata.get(REASON_KEY)
            trial.message = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
            stopped = self._end(trial)
            if stopped is not None:
                context.abort(grpc.StatusCode.ABORTED, str(stopped))
            return protos.get_service().EndTrialResponse()
        finally:
            self._check_finished()

    def GetSpace(self, request, context):
        self._caller(context)
        return super().GetSpace(request, context)

    def UpdateSpace(self, request, context):
        self._caller(context)
        return super().UpdateSpace(request, context)

    def GetTrial(self, request, context):
        self._caller(context)
        return super().GetTrial(request, context)

    def GetBestTrials(self, request, context):
        self._caller(context)
        return super().GetBestTrials(request, context)

    # -- ours ----------------------------------------------------------------------------------
    def Heartbeat(self, request: dict, context: grpc.ServicerContext) -> dict:
        """A worker process is alive; the answer says how often to say so."""
        self._caller(context)
        return {"interval_s": self.leases.lease_s / 4}

    def expire(self) -> None:
        """Take back the trials of workers silent for the lease: out again, or FAILED after the last attempt."""
        for lease in self.leases.expired():
            held = self.oracle.ongoing_trials.get(lease.tuner_id)
            if held is not None and held.trial_id == lease.trial_id:
                del self.oracle.ongoing_trials[lease.tuner_id]
            trial = self.oracle.trials[lease.trial_id]
            lost = self.leases.lost[lease.trial_id]
            if lost >= MAX_LOST_ATTEMPTS:
                failed = Trial(trial.hyperparameters, trial_id=trial.trial_id, status=TrialStatus.FAILED)
                failed.message = (f"WorkerLost: worker {lease.worker} not heard from for {self.leases.lease_s:g} s "
                                  f"(attempt {lease.attempt}); {lost} attempts lost")
                self._end(failed)
            else:
                self.oracle._retry_queue.append(lease.trial_id)  # private: keras-tuner is pinned (setup.cfg)
                self.oracle.save()
        # A worker gone while it waited holds no trial, but the chief would wait to tell it the search is over.
        for tuner_id in self.leases.silent_tuner_ids() & set(self.oracle.tuner_ids):
            if tuner_id not in self.oracle.ongoing_trials:
                self.oracle.tuner_ids.discard(tuner_id)
        self._check_finished()

    def _caller(self, context):
        """(worker id, session, metadata) of the call; a call without them, or from a superseded process, is aborted."""
        metadata = dict(context.invocation_metadata())
        worker, session = metadata.get(WORKER_KEY), metadata.get(SESSION_KEY)
        if not worker or not session:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this chief serves lora-keras workers: a call must name its worker and session")
        try:
            self.leases.hear(worker, session)
        except Superseded as error:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(error))
        return worker, session, metadata

    def _holding(self, trial_id, session, metadata, context):
        """The call's lease on `trial_id`; a stale attempt is aborted (FAILED_PRECONDITION)."""
        try:
            return self.leases.check(trial_id, session, _attempt(metadata))
        except StaleAttempt as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))

    def _end(self, trial):
        """End `trial` in the oracle, then release its lease; the oracle's failure-limit error, or None.

        In that order: a chief killed in between leaves a lease on an ended trial, which a restart
        releases (`_restore`); the other order would leave a running trial no one holds, run again.
        """
        try:
            self.oracle.end_trial(trial)
        except RuntimeError as error:
            if not is_failure_limit(error):
                raise
            self.leases.release(trial.trial_id)
            self.failure = error
            for tuner_id, ongoing in list(self.oracle.ongoing_trials.items()):
                if ongoing.trial_id == trial.trial_id:  # what `Oracle.end_trial` does last unless it raised
                    del self.oracle.ongoing_trials[tuner_id]
                    self.oracle.tuner_ids.discard(tuner_id)
            self._trial_ended()
            return error
        self.leases.release(trial.trial_id)
        self._trial_ended()
        return None

    def _trial_ended(self):
        # `Oracle.end_trial` saves before it lets go of the trial, so the last trial would
        # stay "running" on disk, and run again on resume; a local tuner saves after it, as here.
        self.oracle.save()
        self.on_trial_end()

    def _restore(self):
        """Take back the leases a previous chief saved; keep only trials that may still run in the queue."""
        for lease in self.leases.restore():
            trial = self.oracle.trials.get(lease.trial_id)
            if trial is None:
                self.leases.leases.pop(lease.trial_id)
                continue
            if trial.status != TrialStatus.RUNNING:  # it ended, and the chief died before releasing it
                self.leases.release(lease.trial_id)
                continue
            self.oracle.ongoing_trials[lease.tuner_id] = trial
            self.oracle.tuner_ids.add(lease.tuner_id)
            # keras-tuner's display saved the oracle before it noted the trial's start; its end reads it.
            display = self.oracle._display  # private: keras-tuner is pinned (setup.cfg)
            display.trial_start.setdefault(trial.trial_id, datetime.datetime.now())
            display.trial_number.setdefault(trial.trial_id, list(self.oracle.trials).index(trial.trial_id) + 1)
        held = {trial.trial_id for trial in self.oracle.ongoing_trials.values()}
        # keras-tuner's `reload` queues every running trial again, once per reload, and keeps ended ones.
        queue = []
        for trial_id in self.oracle._retry_queue:  # private: keras-tuner is pinned (setup.cfg)
            if trial_id not in held and trial_id not in queue and self.oracle.trials[trial_id].status in _RETRYABLE:
                queue.append(trial_id)
        self.oracle._retry_queue = queue
        self.oracle.save()
        self.leases.save()

    def _check_finished(self):
        """Over once the search stopped, no trial runs and every worker was told (`exit_chief`)."""
        stopping = self.stop_triggered or self.failure is not None
        self.finished = stopping and not self.oracle.ongoing_trials and not self.oracle.tuner_ids


def _attempt(metadata) -> int:
    """The attempt a call names (0 when it names none or not a number)."""
    try:
        return int(metadata.get(ATTEMPT_KEY, "0"))
    except ValueError:
        return 0


def serve_oracle(
    oracle: keras_tuner.Oracle, cluster: Cluster, run_dir: str | pathlib.Path,
    on_trial_end: Callable[[], object] = lambda: None,
) -> None:
    """Serve `oracle` at the cluster's address until every worker has been told the search is over.

    Args:
        oracle: the sweep's oracle, its project directory set (by a tuner) to `run_dir/tuner`.
        cluster: the chief's part: address, `token`, `tls`, `lease_s`, `allow_public_bind`.
        run_dir: the run's directory (the leases are saved in `tuner/leases.json`).
        on_trial_end: called after each trial ends.

    Raises the oracle's `RuntimeError` when too many trials failed in a row
    (`tuners.failures.is_failure_limit`), once every running trial has ended; `InputError`
    when it may not or cannot listen there.

    Example: `serve_oracle(tuner.oracle, cluster, run_dir, on_trial_end=lambda: write_tables(tuner))`.
    """
    if not cluster.token:
        raise ValueError("serve_oracle needs the cluster's token (tuners.oracle_security.chief_token)")
    check_bind_address(cluster.host, cluster.allow_public_bind)
    run_dir = pathlib.Path(run_dir)
    leases = LeaseBook(run_dir / "tuner" / LEASES_FILE, cluster.lease_s)
    # One thread serves every call and the lease checks; no port sharing, so a second chief on the port fails to start.
    executor = futures.ThreadPoolExecutor(max_workers=1)
    servicer = executor.submit(_SweepServicer, oracle, run_dir, leases, on_trial_end).result()
    server = grpc.server(executor, interceptors=[TokenInterceptor(cluster.token)],
                         options=[("grpc.so_reuseport", 0)])
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    service, method = HEARTBEAT_METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_unary_rpc_method_handler(
            servicer.Heartbeat, request_deserializer=json.loads, response_serializer=lambda r: json.dumps(r).encode()),
    }),))
    _listen(server, cluster)
    server.start()
    try:
        while not servicer.finished:
            time.sleep(POLL_S)
            executor.submit(servicer.expire).result()
    finally:
        server.stop(STOP_GRACE_S).wait()
        executor.shutdown()
    if servicer.failure is not None:
        raise servicer.failure


def _listen(server, cluster):
    from lora_keras.errors import InputError

    address = cluster.address
    try:
        if cluster.tls is not None and cluster.tls.cert:
            bound = server.add_secure_port(address, cluster.tls.server_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise InputError(
            f"oracle_address {address}: cannot listen there (port in use, or not an address "
            "of this machine); pick another port, or a private address of this machine", parameter="oracle_address",
        )
