"""The search space of a sweep: the values each LoRA hyperparameter may take, and a trial's values.

Everything a trial's hyperparameters mean is read here: the oracle's declaration, the six
values of a trial, its epochs (Hyperband sets them), its `LoraConfig`. The chief, which builds
no model, needs this and nothing of the HyperModel.

Example:
```python
space = SearchSpace(ranks=(1, 4), batch_sizes=(8, 64))
hp = keras_tuner.HyperParameters()
space.declare(hp)
space.trial_hparams(hp, max_epochs=2)  # {"rank": 1, "batch_size": 8, ..., "epochs": 2}
```
"""

import dataclasses

import keras_tuner

from lora_keras.adapters import LoraConfig


def targets_name(targets: tuple[str, ...]) -> str:
    """The name of a set of LoRA targets as HParams and results.csv show it.

    Args:
        targets: projection names, e.g. `("q", "v")`.

    Returns:
        The names joined by commas.

    Example: `targets_name(("q", "v"))` -> `"q,v"`.
    """
    return ",".join(targets)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values each hyperparameter may take; no `lora_alphas` means alpha = rank (scale 1).

    `target_sets` holds one or more sets of projections to adapt, each swept as one value.
    Its fields are part of a run's identity (`run_config.json`): a rerun resumes only the same space.

    `seeds` are the training seeds each configuration is trained with (`--seed` and `--repeats`):
    each draws its own LoRA initialisation, dropout masks and data order, on the same pairs.

    Example: `SearchSpace(ranks=(1, 4, 16), batch_sizes=(8, 64, 128), learning_rates=(3e-3,),
    lora_alphas=(8, 16), target_sets=(("q", "v"), ("q", "k", "v", "o")), lora_dropouts=(0.0, 0.1), seeds=(0, 1, 2))`.
    """

    ranks: tuple = (1, 4, 16)
    batch_sizes: tuple = (8, 64, 128)
    learning_rates: tuple = (3e-3,)
    lora_alphas: tuple = ()
    target_sets: tuple = (("q", "v"),)
    lora_dropouts: tuple = (0.0,)
    seeds: tuple = (0,)

    @property
    def alphas(self) -> tuple[float, ...]:
        """Every alpha a trial may use: the given ones, else the ranks."""
        return tuple(sorted({float(a) for a in (self.lora_alphas or self.ranks)}))

    def declare(self, hp: keras_tuner.HyperParameters) -> None:
        """Declare the searched hyperparameters on `hp`.

        Rank, batch size and learning rate always; alpha, targets, dropout and seed
        only when given several values: one value is a setting, not a dimension
        to search (and keeps the search space, random draws included, as before).

        Args:
            hp: the oracle's (or a trial's) `keras_tuner.HyperParameters`.

        Example: `SearchSpace(ranks=(1, 4)).declare(hp)`; `[p.name for p in hp.space]` ->
        `["rank", "batch_size", "learning_rate"]`.
        """
        hp.Choice("rank", list(self.ranks), ordered=True)
        hp.Choice("batch_size", list(self.batch_sizes), ordered=True)
        hp.Choice("learning_rate", list(self.learning_rates), ordered=True)
        if len(self.lora_alphas) > 1:
            hp.Choice("lora_alpha", [float(a) for a in self.lora_alphas], ordered=True)
        if len(self.target_sets) > 1:
            hp.Choice("targets", [targets_name(t) for t in self.target_sets], ordered=False)
        if len(self.lora_dropouts) > 1:
            hp.Choice("lora_dropout", [float(p) for p in self.lora_dropouts], ordered=True)
        if len(self.seeds) > 1:  # repeats: declared last, so a grid trains a configuration's seeds in a row
            hp.Choice("seed", [int(s) for s in self.seeds], ordered=True)

    def trial_values(self, hp: keras_tuner.HyperParameters) -> dict:
        """A trial's six LoRA hyperparameters and its seed: searched ones from `hp`, the others fixed here.

        Args:
            hp: the trial's hyperparameters, declared by `declare`.

        Returns:
            `rank`, `batch_size`, `learning_rate`, `lora_alpha`, `targets` (a `targets_name`)
            `lora_dropout` and `seed`.

        Example: `space.trial_values(hp)` -> `{"rank": 4, "batch_size": 8, "learning_rate": 0.003,
        "lora_alpha": 4.0, "targets": "q,v", "lora_dropout": 0.0, "seed": 0}`.
        """
        values = hp.values
        rank = int(values["rank"])
        fixed_alpha = self.lora_alphas[0] if self.lora_alphas else rank
        return {
            "rank": rank,
            "batch_size": int(values["batch_size"]),
            "learning_rate": float(values["learning_rate"]),
            "lora_alpha": float(values.get("lora_alpha", fixed_alpha)),
            "targets": values.get("targets", targets_name(self.target_sets[0])),
            "lora_dropout": float(values.get("lora_dropout", self.lora_dropouts[0])),
            "seed": int(values.get("seed", self.seeds[0])),
        }

    def trial_epochs(self, hp: keras_tuner.HyperParameters, max_epochs: int) -> tuple[int, int]:
        """The epochs a trial trains from and to: 0 to `max_epochs`, unless Hyperband set a budget.

        Args:
            hp: the trial's hyperparameters; Hyperband adds `tuner/initial_epoch` and `tuner/epochs`.
            max_epochs: the sweep's epochs per trial.

        Returns:
            `(initial_epoch, epochs)`.

        Example: `space.trial_epochs(hp, 2)` -> `(0, 2)`; for a continued Hyperband trial `(1, 2)`.
        """
        return int(hp.values.get("tuner/initial_epoch", 0)), int(hp.values.get("tuner/epochs", max_epochs))

    def trial_hparams(self, hp: keras_tuner.HyperParameters, max_epochs: int) -> dict:
        """A trial's HParams row: its hyperparameters, seed included, and the epochs it trains to.

        Args:
            hp: the trial's hyperparameters.
            max_epochs: the sweep's epochs per trial.

        Returns:
            `trial_values(hp)` plus `epochs`.

        Example: `space.trial_hparams(hp, 2)` -> `{"rank": 4, ..., "lora_dropout": 0.0, "epochs": 2}`.
        """
        return {**self.trial_values(hp), "epochs": self.trial_epochs(hp, max_epochs)[1]}

    def lora_config(self, hp: keras_tuner.HyperParameters, init: str = "peft") -> LoraConfig:
        """The LoRA adapter a trial trains.

        Args:
            hp: the trial's hyperparameters.
            init: how LoRA's A is drawn (`lora_keras.adapters.config.INITIALIZERS`).

        Returns:
            The trial's `LoraConfig` (rank, alpha, targets, dropout, init).

        Example: `space.lora_config(hp)` -> `LoraConfig(rank=4, alpha=4.0, targets=("q", "v"), ...)`.
        """
        values = self.trial_values(hp)
        return LoraConfig(
            values["rank"], values["lora_alpha"], tuple(values["targets"].split(",")), values["lora_dropout"], init,
        )
