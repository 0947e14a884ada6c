"""`SweepConfig`: everything a sweep takes, as plain values with defaults (`scripts/tune.py`'s flags).

Example:
```python
config = SweepConfig(space=SearchSpace(ranks=(1, 4), batch_sizes=(8,)), epochs=1, name="small")
config.run_dir  # PosixPath('logs/small')
```
"""

import dataclasses
import json
import pathlib

from lora_keras.models.token_loss import LOSS_DEFINITION
from tuners.cluster import Cluster
from tuners.search_space import SearchSpace

# Settings that may change between a run and its resumption.
# `pack` too: a packed trial trains as it would alone. XLA (`jit_compile`) changes how a step runs, not
# what it computes: a run resumes with it on or off.
TRANSIENT = (
    "overwrite", "verbose", "logdir", "name", "memory_budget_mb", "time_budget_s", "devices", "cluster", "pack",
    "jit_compile",
)


@dataclasses.dataclass
class SweepConfig:
    """Everything `scripts/tune.py` takes; defaults reproduce the 3x3 demo study.

    Each field is the flag of the same name (`source_lang` is `--source-lang`), except
    `space` (`--ranks`, `--batch-sizes`, `--learning-rates`, `--lora-alpha`, `--targets`,
    `--lora-dropouts`), `verbose` (`--quiet`), `cluster` (`--distributed`, `--oracle-address`,
    `--worker-id`, `--chief-timeout`, `--lease-s`, `--allow-public-bind`, `--tls-cert`, `--tls-key`,
    `--tls-ca`) and `pack` (`--pack`, `--no-pack`; None: `tuners.packing.policy_for`'s default).
    The space's `seeds` follow from `seed` and `repeats` (`seed`, `seed + 1`, ...).

    Example: `SweepConfig(model="path/to/flan-t5-small", train="train.tsv", source_lang="English",
    target_lang="French", space=SearchSpace(ranks=(4, 16)))`.
    """

    model: str = "tiny"
    train: str | None = None
    val: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    prefix: str | None = None
    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    epochs: int = 2
    strategy: str = "grid"
    max_trials: int | None = None
    logdir: str = "logs"
    name: str = "sweep"
    overwrite: bool = False
    max_train_examples: int | None = None
    max_val_examples: int | None = None
    max_source_length: int = 64
    max_target_length: int = 64
    seed: int = 0  # the first training seed, and the strategy's
    repeats: int = 1  # seeds per configuration: seed, seed + 1, ... (`space.seeds`)
    data_seed: int = 0  # the demo corpus and the held-out split of `train`: the same pairs for every seed
    lora_init: str = "peft"  # how LoRA's A is drawn: `lora_keras.adapters.config.INITIALIZERS`
    precision: str = "float32"  # `lora_keras.runtime.precision.PRECISIONS`
    jit_compile: bool | None = None  # XLA for training; None: on with a GPU, off on CPU
    memory_budget_mb: float | None = None
    time_budget_s: float | None = None
    verbose: int = 1
    devices: str | None = None  # `lora_keras.runtime.devices.mirrored_strategy` spec: data parallel per trial
    cluster: Cluster | None = None  # this process's part in a distributed sweep
    pack: int | None = None  # the most trials trained in one step; None: every rank of a grid

    def __post_init__(self) -> None:
        self.space = dataclasses.replace(self.space, seeds=tuple(range(self.seed, self.seed + max(1, self.repeats))))

    @property
    def run_dir(self) -> pathlib.Path:
        """`LOGDIR/NAME`, where the run's files go."""
        return pathlib.Path(self.logdir) / self.name

    def identity(self) -> dict:
        """What must match for a rerun to resume this run rather than start another.

        Returns:
            The settings as JSON values, transient ones left out, with the loss's definition.

        Example: `SweepConfig().identity()["space"]["ranks"]` -> `[1, 4, 16]`.
        """
        fields = dataclasses.asdict(self)
        for transient in TRANSIENT:
            fields.pop(transient)
        fields["loss"] = LOSS_DEFINITION
        return json.loads(json.dumps(fields))
