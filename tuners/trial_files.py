"""A trial's files: written by one attempt in a staging directory, then committed into place once.

A trial can run more than once at the same time in a distributed sweep: a worker stopped past its
lease comes back and finishes the attempt the chief already gave to another worker. So an attempt
writes its TensorBoard session, adapter, measurements and validation file under
`<run_dir>/attempts/trial_<id>.<attempt>/`, and only the accepted attempt is moved into the run's
places (`tensorboard/trial_<id>/`, `adapters/trial_<id>.safetensors`,
`tuner/trial_<id>/measurements.json`, `validation/trial_<id>.json`): by the local run when the
trial ends, by the chief when it accepts the attempt's end. A refused attempt drops its own.

Every trial id that reaches a path is checked first (`check_trial_id`): a worker takes ids from
the chief, the chief from workers.

Example:
```python
files = TrialFiles(run_dir, "3", attempt=2)
plan_paths = files.staged_session, files.staged_adapter   # where the attempt writes
files.commit()                                             # the accepted attempt's into place
```
"""

import dataclasses
import pathlib
import re
import shutil

from lora_keras.results.configurations import REFERENCES_FILE, VALIDATION_DIR

ATTEMPTS_DIR = "attempts"
MEASUREMENTS_FILE = "measurements.json"
# keras-tuner's trial ids are zero-padded numbers; anything with a separator or a dot is refused.
_TRIAL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class UntrustedValue(ValueError):
    """A value from another process that must not reach a path (a trial id such as `0/../../x`)."""


def check_trial_id(value: object, source: str = "the chief") -> str:
    """`value` if it is a trial id that is safe in a file name; `UntrustedValue` otherwise.

    Args:
        value: a trial id received from another process.
        source: who sent it, for the message.

    Example: `check_trial_id("07")` -> `"07"`; `check_trial_id("0/../../x")` raises.
    """
    if not isinstance(value, str) or not _TRIAL_ID.fullmatch(value):
        raise UntrustedValue(f"{source} sent the trial id {value!r}, which is not one (letters, digits, '_', '-')")
    return value


@dataclasses.dataclass(frozen=True)
class TrialFiles:
    """Where one attempt of a trial writes, and where the accepted attempt's files end up.

    Args:
        run_dir: the run's directory (`LOGDIR/NAME`).
        trial_id: the trial's id (checked: `check_trial_id`).
        attempt: the attempt's number, 1 for the first.

    Example: `TrialFiles(run_dir, "3").adapter` -> `run_dir / "adapters/trial_3.safetensors"`.
    """

    run_dir: pathlib.Path
    trial_id: str
    attempt: int = 1

    def __post_init__(self):
        object.__setattr__(self, "run_dir", pathlib.Path(self.run_dir))
        check_trial_id(self.trial_id)
        if not isinstance(self.attempt, int) or self.attempt < 1:
            raise UntrustedValue(f"attempt {self.attempt!r} of trial {self.trial_id} is not a positive number")

    # Where the accepted attempt's files are (what the run's readers read).
    @property
    def session_dir(self) -> pathlib.Path:
        """The trial's TensorBoard HParams session."""
        return self.run_dir / "tensorboard" / f"trial_{self.trial_id}"

    @property
    def adapter(self) -> pathlib.Path:
        """The trial's LoRA weights alone."""
        return self.run_dir / "adapters" / f"trial_{self.trial_id}.safetensors"

    @property
    def measurements(self) -> pathlib.Path:
        """The trial's figures, in keras-tuner's trial directory."""
        return self.run_dir / "tuner" / f"trial_{self.trial_id}" / MEASUREMENTS_FILE

    @property
    def validation(self) -> pathlib.Path:
        """The trial's per-pair val losses and translations."""
        return self.run_dir / VALIDATION_DIR / f"trial_{self.trial_id}.json"

    @property
    def references(self) -> pathlib.Path:
        """The run's validation sources and references, shared by every trial (written once, by the first)."""
        return self.run_dir / VALIDATION_DIR / REFERENCES_FILE

    # Where this attempt writes them.
    @property
    def staging_dir(self) -> pathlib.Path:
        """This attempt's own directory: `attempts/trial_<id>.<attempt>`."""
        return self.run_dir / ATTEMPTS_DIR / f"trial_{self.trial_id}.{self.attempt}"

    @property
    def staged_session(self) -> pathlib.Path:
        return self.staging_dir / "tensorboard"

    @property
    def staged_adapter(self) -> pathlib.Path:
        return self.staging_dir / "adapter.safetensors"

    @property
    def staged_measurements(self) -> pathlib.Path:
        return self.staging_dir / MEASUREMENTS_FILE

    @property
    def staged_validation(self) -> pathlib.Path:
        return self.staging_dir / "validation.json"

    def _pairs(self):
        return ((self.staged_session, self.session_dir), (self.staged_adapter, self.adapter),
                (self.staged_validation, self.validation), (self.staged_measurements, self.measurements))

    def commit(self) -> None:
        """Move this attempt's files into the trial's places (replacing any there), then drop its directory.

        The measurements move last: a reader that finds them finds the rest.
        """
        for staged, final in self._pairs():
            if not staged.exists():
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_dir():
                shutil.rmtree(final)
            staged.replace(final)  # a rename: the old file, or the new one, never half of one
        self.discard()

    def discard(self) -> None:
        """Drop this attempt's files (a refused attempt, or a stale one before it runs again)."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def drop_attempts(run_dir: pathlib.Path) -> None:
    """Drop every attempt's leftovers (killed or refused attempts), once no trial runs.

    Example: `drop_attempts(run_dir)` at the end of a sweep.
    """
    shutil.rmtree(pathlib.Path(run_dir) / ATTEMPTS_DIR, ignore_errors=True)
