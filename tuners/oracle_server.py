"""The chief's job in a distributed sweep: serve the oracle to the workers over keras-tuner's gRPC.

keras-tuner's `oracle_chief.start_server` offers no hook when a trial ends and checks for the end
of the search every 20 s; this serves keras-tuner's same `OracleServicer` (the same protocol,
so its `OracleClient` on the workers is unchanged) with a callback after every ended trial and
a clean stop when the oracle stops the sweep (too many failed trials in a row).

Example:
```python
serve_oracle(tuner.oracle, "0.0.0.0", 8000, on_trial_end=lambda: write_tables(tuner))  # returns when it is over
```
"""

import time
from collections.abc import Callable
from concurrent import futures

import grpc
import keras_tuner
from keras_tuner.src import protos  # private: keras-tuner is pinned (setup.cfg)
from keras_tuner.src.distribute import oracle_chief

from lora_keras.errors import InputError
from tuners.failures import is_failure_limit

POLL_S = 0.5
STOP_GRACE_S = 5


class _SweepServicer(oracle_chief.OracleServicer):
    """keras-tuner's servicer, plus `on_trial_end` and a stop on the oracle's failure limit.

    Every handler runs in the server's one thread, the only one that changes the oracle, so
    `finished` is decided there: keras-tuner's oracle lock is never released once `end_trial`
    raised, and another thread asking the oracle would wait forever.
    """

    def __init__(self, oracle, on_trial_end):
        super().__init__(oracle)
        self.on_trial_end = on_trial_end
        self.failure = None
        self.finished = False

    def CreateTrial(self, request, context: grpc.ServicerContext):  # gRPC method names
        """keras-tuner's, unless the sweep is stopping: then the worker is told so and let go."""
        try:
            if self.failure is not None:  # the sweep is stopping: no new trials
                self.oracle.tuner_ids.discard(request.tuner_id)
                context.abort(grpc.StatusCode.ABORTED, str(self.failure))
            return super().CreateTrial(request, context)
        finally:
            self._check_finished()

    def EndTrial(self, request, context: grpc.ServicerContext):
        """keras-tuner's, then save and `on_trial_end`; at the failure limit, the worker is told so."""
        try:
            try:
                response = super().EndTrial(request, context)
            except RuntimeError as error:
                if not is_failure_limit(error):
                    raise
                self.failure = error
                self._release(request.trial.trial_id)
                self._trial_ended()
                context.abort(grpc.StatusCode.ABORTED, str(error))
            self._trial_ended()
            return response
        finally:
            self._check_finished()

    def _trial_ended(self):
        # `Oracle.end_trial` saves before it lets go of the trial, so the last trial would
        # stay "running" on disk, and run again on resume; a local tuner saves after it, as here.
        self.oracle.save()
        self.on_trial_end()

    def _release(self, trial_id):
        """Let go of a trial and its worker, as `Oracle.end_trial` does last unless it raised."""
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            if trial.trial_id == trial_id:
                del self.oracle.ongoing_trials[tuner_id]
                self.oracle.tuner_ids.discard(tuner_id)

    def _check_finished(self):
        """Over once the search stopped, no trial runs and every worker was told (`exit_chief`)."""
        stopping = self.stop_triggered or self.failure is not None
        self.finished = stopping and not self.oracle.ongoing_trials and not self.oracle.tuner_ids


def serve_oracle(
    oracle: keras_tuner.Oracle, host: str, port: int, on_trial_end: Callable[[], object] = lambda: None,
) -> None:
    """Serve `oracle` at `host:port` until every worker has been told the search is over.

    Args:
        oracle: the sweep's oracle, its project directory set (by a tuner).
        host: the address to listen on (`0.0.0.0` for every interface).
        port: the port to listen on.
        on_trial_end: called after each trial a worker ends.

    Raises the oracle's `RuntimeError` when too many trials failed in a row
    (`tuners.failures.is_failure_limit`), once every running trial has ended; `InputError`
    when it cannot listen there.

    Example: `serve_oracle(tuner.oracle, "0.0.0.0", 8000, on_trial_end=lambda: write_tables(tuner))`.
    """
    # One request at a time; and no port sharing, so a second chief on the port fails to start.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)])
    servicer = _SweepServicer(oracle, on_trial_end)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise InputError(
            f"oracle_address {host}:{port}: cannot listen there (port in use, or not an address "
            "of this machine); pick another port, or 0.0.0.0 to listen on every interface",
            parameter="oracle_address",
        )
    server.start()
    try:
        while not servicer.finished:
            time.sleep(POLL_S)
    finally:
        server.stop(STOP_GRACE_S).wait()
    if servicer.failure is not None:
        raise servicer.failure
