"""This process's part in a distributed sweep: the chief (holds the oracle) or a worker (runs trials).

keras-tuner takes the part from the environment when a tuner is built (`KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`); `Cluster.export()` sets it first.

Example:
```python
cluster = Cluster("worker", "10.0.0.5", 8000)
cluster.export()            # before the tuner is built
cluster.wait_for_chief()    # InputError after `chief_timeout_s` without an answer
```
"""

import dataclasses
import os
import re
import socket

from lora_keras.errors import InputError

CHIEF, WORKER = "chief", "worker"
DEFAULT_CHIEF_TIMEOUT_S = 300.0
_ID = re.compile(r"[A-Za-z0-9._-]+")


def default_worker_id() -> str:
    """`worker-<host>-<pid>`: distinct for every worker process on every machine.

    Example: `default_worker_id()` -> `"worker-node1-4242"`.
    """
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())
    return f"worker-{host.replace(CHIEF, 'chf')}-{os.getpid()}"


def is_worker() -> bool:
    """True in a worker process once `Cluster.export()` ran (keras-tuner's own rule).

    Example: `Cluster("worker", "10.0.0.5", 8000).export()`; then `is_worker()` -> `True`.
    """
    from keras_tuner.src.distribute import utils  # private: keras-tuner is pinned (setup.cfg)

    return utils.has_chief_oracle() and not utils.is_chief_oracle()


@dataclasses.dataclass
class Cluster:
    """The role, the chief's address and, for a worker, its id and its patience with the chief.

    Args:
        role: `"chief"` or `"worker"`.
        host: the chief's host (the chief: the address it listens on).
        port: the chief's port.
        worker_id: a worker's id, distinct per worker; default `default_worker_id()`.
        chief_timeout_s: how long a worker waits for an unreachable chief.

    Example: `Cluster("worker", "10.0.0.5", 8000, worker_id="w1").tuner_id` -> `"w1"`.
    """

    role: str
    host: str
    port: int
    worker_id: str | None = None
    chief_timeout_s: float = DEFAULT_CHIEF_TIMEOUT_S

    def __post_init__(self):
        if self.role not in (CHIEF, WORKER):
            raise InputError(f"distributed {self.role}: choose {CHIEF} or {WORKER}", parameter="distributed")
        if self.role == WORKER:
            self.worker_id = self.worker_id or default_worker_id()
            # keras-tuner takes any id containing "chief" for the chief.
            if not _ID.fullmatch(self.worker_id) or CHIEF in self.worker_id:
                raise InputError(
                    f"worker_id {self.worker_id!r}: use letters, digits, '.', '_' or '-', "
                    f"and not the word {CHIEF!r}",
                    parameter="worker_id",
                )

    @property
    def address(self) -> str:
        """`HOST:PORT` of the chief."""
        return f"{self.host}:{self.port}"

    @property
    def tuner_id(self) -> str:
        """keras-tuner's id of this process: `chief`, or the worker's id."""
        return CHIEF if self.role == CHIEF else self.worker_id

    def export(self) -> None:
        """Tell keras-tuner this process's part; call before building a tuner."""
        os.environ["KERASTUNER_TUNER_ID"] = self.tuner_id
        os.environ["KERASTUNER_ORACLE_IP"] = self.host
        os.environ["KERASTUNER_ORACLE_PORT"] = str(self.port)
        if self.role == WORKER:
            from keras_tuner.src.distribute import oracle_client  # private: keras-tuner is pinned

            # Every call to the chief waits this long for it (keras-tuner: an hour), so a worker
            # whose chief is gone says so instead of hanging.
            oracle_client.TIMEOUT = self.chief_timeout_s

    def wait_for_chief(self) -> None:
        """Return once the chief answers at `address`; `InputError` after `chief_timeout_s`."""
        import grpc

        channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(channel).result(timeout=self.chief_timeout_s)
        except grpc.FutureTimeoutError:
            raise InputError(
                f"oracle_address: no chief answered at {self.address} within {self.chief_timeout_s:g} s; "
                "start the chief there first, or give its address", parameter="oracle_address"
            ) from None
        finally:
            channel.close()
