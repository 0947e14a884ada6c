"""What a LoRA adapter is: `LoraConfig` and the T5 projections it can target.

Example:
```python
config = LoraConfig(rank=4, alpha=8, targets=("q", "v"))
layers = target_layers(backbone, config.targets)   # {"encoder/0/self_attention/q": Dense, ...}
```
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import keras
import numpy as np

from lora_keras.errors import InputError

# T5's own names (as in Hugging Face checkpoints) -> keras-hub attribute names.
ATTENTION_TARGETS = {
    "q": "query_projector",
    "k": "key_projector",
    "v": "value_projector",
    "o": "output_projector",
}
# Gated feed-forwards (T5 v1.1, FLAN) have two input projections, wi_0 and wi_1:
# "wi" adapts both.
FEED_FORWARD_TARGETS = {
    "wi": ("input_projector", "gate_projector"),
    "wo": ("output_projector",),
}
TARGETS = tuple(ATTENTION_TARGETS) + tuple(FEED_FORWARD_TARGETS)


def uniform_a(limit_times_fan_in: float) -> Callable[[int | None], Callable[[tuple[int, int]], np.ndarray]]:
    """A draw of `A` `(d_in, rank)`, uniform on `+-sqrt(limit_times_fan_in / d_in)`, seeded, in numpy.

    Drawn with numpy, not the Keras backend's generator, so one seed gives one `A` on every backend.

    Example: `uniform_a(1.0)(seed=0)((64, 4))` -> float32 values within `+-1/8`.
    """

    def seeded(seed: int | None) -> Callable[[tuple[int, int]], np.ndarray]:
        def draw(shape: tuple[int, int]) -> np.ndarray:
            limit = math.sqrt(limit_times_fan_in / shape[0])
            return np.random.default_rng(seed).uniform(-limit, limit, shape).astype("float32")

        return draw

    return seeded


# How A is drawn. PEFT: kaiming_uniform_(a=sqrt(5)) on a (rank, d_in) weight, a bound of
# gain * sqrt(3 / fan_in) = sqrt(2 / 6) * sqrt(3 / d_in) = 1 / sqrt(d_in). Keras's enable_lora
# default: He uniform, sqrt(6 / d_in).
INITIALIZERS = {
    "peft": uniform_a(1.0),
    "keras": uniform_a(6.0),
}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """What to adapt and how: PEFT's `r`, `lora_alpha`, `target_modules`, `lora_dropout`.

    Args:
        rank: the adapter's rank `r`.
        alpha: LoRA alpha; the update is scaled by `alpha / rank`. `None` means alpha equal to rank.
        targets: T5 projections to adapt, from `TARGETS`.
        dropout: dropout on the LoRA branch's input, in training only.
        init: how `A` is drawn, a key of `INITIALIZERS`.

    Example:
    ```python
    LoraConfig(rank=4, alpha=8, targets=("q", "v"), dropout=0.1).scale   # 2.0
    ```
    """

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = ("q", "v")
    dropout: float = 0.0
    init: str = "peft"

    @property
    def effective_alpha(self) -> float:
        """Alpha, with `None` read as equal to rank."""
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def scale(self) -> float:
        """`alpha / rank`, the factor on `A @ B`."""
        return self.effective_alpha / self.rank

    def to_dict(self) -> dict:
        """The config as JSON-ready values (alpha resolved)."""
        return {
            "rank": self.rank,
            "alpha": self.effective_alpha,
            "targets": list(self.targets),
            "dropout": float(self.dropout),
            "init": self.init,
        }

    def check(self) -> None:
        """Raise `InputError` unless every field is valid (the rank is checked against a model by `check_rank`)."""
        if not isinstance(self.rank, int) or self.rank < 1:
            raise InputError(f"LoRA rank must be a positive integer, got {self.rank}", parameter="rank")
        if self.alpha is not None and self.alpha <= 0:
            raise InputError(f"LoRA alpha must be positive, got {self.alpha}", parameter="alpha")
        if not 0 <= self.dropout < 1:
            raise InputError(f"LoRA dropout must be at least 0 and below 1, got {self.dropout}", parameter="dropout")
        if self.init not in INITIALIZERS:
            raise InputError(f"LoRA init {self.init!r} is unknown; choose from {' '.join(INITIALIZERS)}", parameter="init")


def projection_sites(backbone: keras.Model, targets: Iterable[str]) -> dict[str, tuple[keras.layers.Layer, str]]:
    """Where each T5 projection named by `targets` sits: `{path: (parent layer, attribute name)}`.

    Args:
        backbone: a keras-hub `T5Backbone`.
        targets: names from `TARGETS`.

    Returns:
        `{path: (parent, attribute)}` in a fixed order: encoder then decoder, block by block.

    Example: `projection_sites(backbone, ["q"])["encoder/0/self_attention/q"]` -> `(attention, "query_projector")`.
    """
    targets = tuple(targets)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise InputError(
            f"targets: unknown LoRA target(s) {', '.join(unknown)}; choose from {' '.join(TARGETS)}",
            parameter="targets",
        )
    if not targets:
        raise InputError(f"targets: none given; choose from {' '.join(TARGETS)}", parameter="targets")
    sites = {}
    stacks = (
        ("encoder", backbone.encoder_transformer_layers),
        ("decoder", backbone.decoder_transformer_layers),
    )
    for stack_name, stack in stacks:
        for index, block in enumerate(stack):
            attentions = [("self_attention", block.self_attention)]
            if block.is_decoder:
                attentions.append(("cross_attention", block.cross_attention))
            for attention_name, attention in attentions:
                for target in targets:
                    if target in ATTENTION_TARGETS:
                        sites[f"{stack_name}/{index}/{attention_name}/{target}"] = (
                            attention, ATTENTION_TARGETS[target])
            for target in targets:
                for number, attribute in enumerate(FEED_FORWARD_TARGETS.get(target, ())):
                    if getattr(block, attribute, None) is None:  # no gate projector in a plain ReLU T5
                        continue
                    suffix = f"{target}_{number}" if target == "wi" else target
                    sites[f"{stack_name}/{index}/feed_forward/{suffix}"] = (block, attribute)
    return sites


def target_layers(backbone: keras.Model, targets: Iterable[str]) -> dict[str, keras.layers.Dense]:
    """The `Dense` layers of `backbone` named by `targets`, keyed by a stable path.

    A projection that `add_lora` wrapped in a `LoraDense` gives the `Dense` it wraps.

    Args:
        backbone: a keras-hub `T5Backbone`.
        targets: names from `TARGETS`.

    Returns:
        `{path: Dense}` in a fixed order: encoder then decoder, block by block.

    Example:
    ```python
    target_layers(backbone, ["q"])
    # {"encoder/0/self_attention/q": Dense, ..., "decoder/0/cross_attention/q": Dense}
    ```
    """
    layers = {}
    for path, (parent, attribute) in projection_sites(backbone, targets).items():
        layer = getattr(parent, attribute)
        layers[path] = layer if isinstance(layer, keras.layers.Dense) else layer.base
    return layers


def check_rank(backbone: keras.Model, config: LoraConfig) -> None:
    """Raise `InputError` unless `config` is valid and its rank fits every targeted layer of `backbone`.

    Example:
    ```python
    check_rank(backbone, LoraConfig(rank=4))
    ```
    """
    config.check()
    for path, dense in target_layers(backbone, config.targets).items():
        d_in, d_out = dense.kernel.shape
        if config.rank > min(d_in, d_out):
            raise InputError(
                f"LoRA rank {config.rank} is wider than layer {path} "
                f"({d_in}x{d_out}); use a rank of at most {min(d_in, d_out)}", parameter="rank"
            )
