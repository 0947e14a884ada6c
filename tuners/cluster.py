"""This process's part in a distributed sweep: the chief (holds the oracle) or a worker (runs trials).

keras-tuner takes the part from the environment when a tuner is built (`KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`); `Cluster.export()` sets it first. Every call
to the chief carries the sweep's token (`tuners.oracle_security`), over TLS when `tls` is given.

Example:
```python
cluster = Cluster("worker", "10.0.0.5", 8000, tls=TlsFiles(ca="ca.pem"))
cluster.export()            # before the tuner is built
cluster.wait_for_chief()    # InputError after `chief_timeout_s` without an answer
cluster.authenticate(worker_token(run_dir))   # InputError when the chief refuses the token
stub = OracleStub(cluster.channel())
```
"""

import dataclasses
import os
import re
import socket

import grpc

from lora_keras.errors import InputError
from tuners.leases import DEFAULT_LEASE_S
from tuners.oracle_security import TlsFiles, authenticated_channel, open_channel, token_refused

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
    """The role, the chief's address and security and, for a worker, its id and its patience with the chief.

    Args:
        role: `"chief"` or `"worker"`.
        host: the chief's host (the chief: the address it listens on).
        port: the chief's port.
        worker_id: a worker's id, distinct per worker; default `default_worker_id()`.
        chief_timeout_s: how long a worker waits for an unreachable chief.
        tls: TLS files (`tuners.oracle_security.TlsFiles`), or None for plain gRPC.
        allow_public_bind: the chief may listen on a wildcard or public address.
        lease_s: how long the chief waits to hear from a worker before it takes the worker's trials back.
        token: the sweep's token; the roles set it once the run directory is known.

    Example: `Cluster("worker", "10.0.0.5", 8000, worker_id="w1").tuner_id` -> `"w1"`.
    """

    role: str
    host: str
    port: int
    worker_id: str | None = None
    chief_timeout_s: float = DEFAULT_CHIEF_TIMEOUT_S
    tls: TlsFiles | None = None
    allow_public_bind: bool = False
    lease_s: float = DEFAULT_LEASE_S
    token: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if self.role not in (CHIEF, WORKER):
            raise InputError(f"distributed {self.role}: choose {CHIEF} or {WORKER}", parameter="distributed")
        if not self.lease_s > 0:
            raise InputError(f"lease_s {self.lease_s}: must be positive", parameter="lease_s")
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

    def channel(self, metadata: tuple = ()) -> grpc.Channel:
        """A channel to the chief sending `token` and `metadata` on every call (TLS with `tls`).

        Example: `OracleStub(cluster.channel((("worker-id", cluster.worker_id),)))`.
        """
        if self.token is None:
            raise RuntimeError("Cluster.token is not set: the roles set it once the run directory is known")
        return authenticated_channel(self.address, self.token, self.tls, metadata)

    def wait_for_chief(self) -> None:
        """Return once the chief answers at `address` (no token needed); `InputError` after `chief_timeout_s`."""
        channel = open_channel(self.address, self.tls)
        try:
            grpc.channel_ready_future(channel).result(timeout=self.chief_timeout_s)
        except grpc.FutureTimeoutError:
            tls = ""
            if self.tls:
                tls = f"; with TLS, check that `tls_ca` signed its certificate and that it names {self.host}"
            raise InputError(
                f"oracle_address: no chief answered at {self.address} within {self.chief_timeout_s:g} s; "
                f"start the chief there first, or give its address{tls}", parameter="oracle_address"
            ) from None
        finally:
            channel.close()

    def authenticate(self, token: str) -> None:
        """Take `token` for every later call and check that the chief accepts it, with one read-only call.

        Only the chief's token check answers UNAUTHENTICATED: then an `InputError` naming the token, so
        a worker stops before it prepares anything. Any other answer came from past that check.

        Example: `cluster.authenticate(worker_token(run_dir))`.
        """
        from keras_tuner.src import protos  # private: keras-tuner is pinned (setup.cfg)

        self.token = token
        channel = self.channel()
        try:
            stub = protos.get_service_grpc().OracleStub(channel)
            stub.GetSpace(protos.get_service().GetSpaceRequest(), timeout=self.chief_timeout_s, wait_for_ready=True)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise token_refused(self.address) from None
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise InputError(
                    f"oracle_address: the chief at {self.address} stopped answering ({error.code().name}); "
                    "restart it, then the workers", parameter="oracle_address"
                ) from None
        finally:
            channel.close()
