"""Leases: which worker process holds which trial, under which attempt, and whether it is still heard from.

The chief of a distributed sweep leases every trial it hands out to the worker process (its
*session*: one per process, so two processes given one `--worker-id` are told apart) that asked.
A worker is heard from with every call, and from a heartbeat thread; one not heard from for
`lease_s` seconds loses its trials: each goes out again with the next attempt number, and after
`MAX_LOST_ATTEMPTS` lost attempts it fails ("worker lost"). A call about a trial that does not
carry the current attempt of its current holder is refused (a fencing token): a late report
from a worker that lost its lease changes nothing.

The book is saved in `<run_dir>/tuner/leases.json` at every change (and at most every
`lease_s / 4` seconds for heartbeats), so a restarted chief takes the leases back instead of
handing running trials out again, and a plain run or `--overwrite` can see live workers.

Example:
```python
book = LeaseBook(run_dir / "tuner" / "leases.json", lease_s=120)
attempt = book.hand_out("3", tuner_id="w1", worker="w1", session="5f0c...")   # 1
book.check("3", session="5f0c...", attempt=1)    # StaleAttempt once another attempt holds trial 3
for lease in book.expired(): ...                 # leases of workers silent for 120 s
```
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

DEFAULT_LEASE_S = 120.0
MAX_LOST_ATTEMPTS = 2
LEASES_FILE = "leases.json"

# What a worker adds to keras-tuner's calls (gRPC metadata), and the heartbeat beside its service.
WORKER_KEY = "lora-keras-worker"  # the worker's id
SESSION_KEY = "lora-keras-session"  # its process: a random id drawn at start
ATTEMPT_KEY = "lora-keras-attempt"  # which attempt a report is about (the chief's answer to CreateTrial)
REASON_KEY = "lora-keras-reason-bin"  # a failed trial's reason, UTF-8 (keras-tuner's Trial proto has no message)
HEARTBEAT_METHOD = "/lora_keras.Leases/Heartbeat"  # JSON in, JSON out


class StaleAttempt(Exception):
    """A call about a trial from an attempt that no longer holds it; the call changes nothing."""


class Superseded(Exception):
    """A call from a worker process whose worker id a newer process took over; the call changes nothing."""


@dataclasses.dataclass
class Lease:
    """One trial handed out: to which tuner id of which worker process, as which attempt."""

    trial_id: str
    tuner_id: str
    worker: str
    session: str
    attempt: int


class LeaseBook:
    """The chief's leases, the attempts and losses per trial, and when each worker process was last heard.

    Args:
        path: where the book is saved (`<run_dir>/tuner/leases.json`); None keeps it in memory.
        lease_s: seconds of silence after which a worker's trials are taken back.
        clock: seconds, monotonic (tests pass their own).

    Example: `LeaseBook(None, lease_s=5).hand_out("0", "w1", "w1", "s1")` -> `1`.
    """

    def __init__(self, path: pathlib.Path | None, lease_s: float = DEFAULT_LEASE_S, clock=time.monotonic):
        self.path = None if path is None else pathlib.Path(path)
        self.lease_s = float(lease_s)
        self.clock = clock
        self.leases: dict[str, Lease] = {}
        self.attempts: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        self.heard: dict[str, float] = {}  # session -> clock()
        self.current_session: dict[str, str] = {}  # worker id -> its newest process
        self.superseded: set[str] = set()
        self.askers: dict[str, str] = {}  # tuner id -> the process that last asked with it
        self.ended: dict[str, tuple[str, int]] = {}  # trial id -> (session, attempt) of the accepted end
        self._saved_at = None

    # -- what the chief records -------------------------------------------------------------
    def hear(self, worker: str, session: str) -> None:
        """A call from `worker`'s process `session`; a newer process of the same id supersedes the older.

        Raises `Superseded` for a process superseded by a newer one with its worker id.
        """
        if session in self.superseded:
            raise Superseded(f"worker_id {worker!r}: a newer worker process took this id over; "
                             "give every worker its own --worker-id")
        previous = self.current_session.get(worker)
        if previous is not None and previous != session:
            self.superseded.add(previous)
        self.current_session[worker] = session
        self.heard[session] = self.clock()
        if self._saved_at is None or self.clock() - self._saved_at > self.lease_s / 4:
            self.save()

    def asked(self, tuner_id: str, session: str) -> None:
        """The process `session` asks for trials under `tuner_id` (a worker's own id, or a pack's `<id>~k`)."""
        self.askers[tuner_id] = session

    def silent_tuner_ids(self) -> set[str]:
        """Tuner ids whose process has not been heard from for the lease (or was superseded)."""
        now = self.clock()
        return {tuner_id for tuner_id, session in self.askers.items()
                if session in self.superseded or now - self.heard.get(session, now) > self.lease_s}

    def hand_out(self, trial_id: str, tuner_id: str, worker: str, session: str) -> int:
        """Lease `trial_id` to the process; its attempt number (the same if this process holds it already)."""
        held = self.leases.get(trial_id)
        if held is not None and held.session == session and held.tuner_id == tuner_id:
            return held.attempt
        attempt = self.attempts.get(trial_id, 0) + 1
        self.attempts[trial_id] = attempt
        self.leases[trial_id] = Lease(trial_id, tuner_id, worker, session, attempt)
        self.save()
        return attempt

    def check(self, trial_id: str, session: str, attempt: int) -> Lease:
        """The lease through which this call may report on `trial_id`; `StaleAttempt` if it holds none."""
        held = self.leases.get(trial_id)
        if held is None or held.session != session or held.attempt != attempt:
            now = "ended" if held is None else f"attempt {held.attempt}, worker {held.worker}"
            raise StaleAttempt(f"attempt {attempt} of trial {trial_id} no longer holds it ({now}): "
                               "its lease was lost and the trial handed out again")
        return held

    def release(self, trial_id: str) -> None:
        """The trial ended (or failed): no lease on it any more; its holder's end is remembered (`ended_by`)."""
        lease = self.leases.pop(trial_id, None)
        if lease is not None:
            self.ended[trial_id] = (lease.session, lease.attempt)
            self.save()

    def ended_by(self, trial_id: str, session: str, attempt: int) -> bool:
        """Whether `trial_id` ended through this process's `attempt`: its end, asked again, is already done.

        A worker asks again when the chief died before answering (possibly after it recorded the end).
        """
        return self.ended.get(trial_id) == (session, attempt)

    def expired(self) -> list[Lease]:
        """Take back and return the leases of worker processes not heard from for `lease_s` seconds."""
        now = self.clock()
        gone = [lease for lease in self.leases.values()
                if now - self.heard.get(lease.session, now) > self.lease_s or lease.session in self.superseded]
        for lease in gone:
            del self.leases[lease.trial_id]
            self.lost[lease.trial_id] = self.lost.get(lease.trial_id, 0) + 1
        if gone:
            self.save()
        return gone

    def silence_s(self, lease: Lease) -> float:
        """Seconds since the lease's process was last heard."""
        return self.clock() - self.heard.get(lease.session, self.clock())

    def holders(self) -> set[str]:
        """The tuner ids that hold a lease."""
        return {lease.tuner_id for lease in self.leases.values()}

    # -- the file -----------------------------------------------------------------------------
    def save(self) -> None:
        """Write the book to `path` (atomically), with each process's last call as wall-clock time."""
        if self.path is None:
            return
        from lora_keras.runtime.atomic_files import write_atomically

        now_clock, now_wall = self.clock(), time.time()
        state = {
            "lease_s": self.lease_s,
            "leases": [dataclasses.asdict(lease) for lease in self.leases.values()],
            "attempts": self.attempts,
            "lost": self.lost,
            "ended": {trial_id: list(ended) for trial_id, ended in self.ended.items()},
            "heard_at": {session: now_wall - (now_clock - heard) for session, heard in self.heard.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(state, indent=1))
        self._saved_at = now_clock

    def restore(self) -> list[Lease]:
        """Read the book a previous chief saved; every lease starts a fresh `lease_s` from now.

        Returns:
            The leases read (the caller gives them back to the oracle, or drops the ended ones).
        """
        if self.path is None or not self.path.is_file():
            return []
        state = json.loads(self.path.read_text())
        self.attempts = {str(k): int(v) for k, v in state.get("attempts", {}).items()}
        self.lost = {str(k): int(v) for k, v in state.get("lost", {}).items()}
        self.ended = {str(k): (str(v[0]), int(v[1])) for k, v in state.get("ended", {}).items()}
        now = self.clock()
        self.leases = {}
        for fields in state.get("leases", []):
            lease = Lease(**fields)
            self.leases[lease.trial_id] = lease
            self.heard[lease.session] = now
            self.current_session.setdefault(lease.worker, lease.session)
        return list(self.leases.values())


def live_leases(run_dir: pathlib.Path, now: float | None = None) -> list[tuple[Lease, float]]:
    """The leases in a run's saved book whose worker was heard from within the lease; with seconds since.

    What a plain run or `--overwrite` checks before it takes a run directory workers may still use.

    Example: `live_leases(run_dir)` -> `[(Lease("3", "w1", "w1", "5f0c...", 1), 12.5)]`.
    """
    path = pathlib.Path(run_dir) / "tuner" / LEASES_FILE
    if not path.is_file():
        return []
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return []
    now = time.time() if now is None else now
    heard_at = state.get("heard_at", {})
    live = []
    for fields in state.get("leases", []):
        lease = Lease(**fields)
        since = now - heard_at.get(lease.session, 0.0)
        if since <= state.get("lease_s", DEFAULT_LEASE_S):
            live.append((lease, since))
    return live
