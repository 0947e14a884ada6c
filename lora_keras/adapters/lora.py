"""LoRA adapters on the projections of a keras-hub `T5Backbone`: add, set, count, merge.

`add_lora` freezes the backbone and puts a `LoraDense` (`lora_keras.adapters.layer`) in
place of each T5 projection: the targeted ones hold `slots` adapters (one, for plain
LoRA), the others none (the plain projection, as one 2-D matmul). Each adapted layer
computes `x @ W + (alpha / rank) * (dropout(x) @ A) @ B` with `W` frozen, `A` (d_in x rank)
random and `B` (rank x d_out) zero, so the adapted model equals the base at step 0 and
trains `rank * (d_in + d_out)` parameters per layer. `A` is drawn as PEFT draws it
(`init="peft"`: uniform in +-1/sqrt(d_in), PyTorch's `kaiming_uniform_(a=sqrt(5))`), so
learning rates carry over from PEFT recipes; `init="keras"` draws it as Keras's
`Dense.enable_lora` does (He uniform, +-sqrt(6/d_in)). keras-hub's `Backbone.enable_lora`
defaults match none of T5's layers, hence `target_layers`.

Example:
```python
backbone = keras_hub.models.T5Backbone(vocabulary_size=300, num_layers=2,
    num_heads=2, hidden_dim=32, intermediate_dim=64)
layers = add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")), seed=0)
merge_lora(backbone)            # W += (alpha / rank) A @ B, B = 0: outputs unchanged
```
"""

from __future__ import annotations

import keras
import numpy as np

from lora_keras.adapters.config import TARGETS, LoraConfig, check_rank, projection_sites, target_layers
from lora_keras.adapters.layer import LoraDense
from lora_keras.backends.devices import static_shapes
from lora_keras.errors import InputError


# Layer `i` of seed `s` draws with seed `s * LAYER_SEED_STRIDE + i`: the seeds of a study's repeats
# (s, s + 1, ...) never share a draw (with `s + i`, seed 1's first layer drew seed 0's second).
LAYER_SEED_STRIDE = 10_007


def layer_seed(seed: int | None, index: int) -> int | None:
    """The seed of the `index`-th adapted layer for `seed` (None stays None: fresh draws).

    Example: `layer_seed(1, 2)` -> `10009`.
    """
    return None if seed is None else seed * LAYER_SEED_STRIDE + index


def add_lora(
    backbone: keras.Model, config: LoraConfig, seed: int | None = None, slots: int = 1, max_rank: int | None = None,
) -> dict[str, LoraDense]:
    """Freeze `backbone` and give each layer `config` targets `slots` LoRA adapters; slot 0 holds `config`.

    Args:
        backbone: a keras-hub `T5Backbone`, without adapters.
        config: rank, alpha, targets, dropout and init (of slot 0; every slot shares targets,
            dropout and init).
        seed: seeds `A` (layer `i` gets `layer_seed(seed, i)`) and the dropout masks; None draws freshly.
        slots: adapters per layer (more than one: trials trained together, `set_slot`).
        max_rank: the rank every slot is padded to; `config.rank` when None.

    Returns:
        The adapted layers keyed by path. The model's output is unchanged until training moves `B`.

    Example:
    ```python
    add_lora(backbone, LoraConfig(rank=4), seed=0)
    add_lora(other_backbone, LoraConfig(rank=1), seed=0, slots=3, max_rank=16)   # packed trials
    ```
    """
    max_rank = config.rank if max_rank is None else int(max_rank)
    check_rank(backbone, LoraConfig(max_rank, config.alpha, config.targets, config.dropout, config.init))
    if lora_layers(backbone):
        raise InputError("backbone: it already has LoRA adapters; build a fresh backbone to add others",
                         parameter="backbone")
    if slots < 1:
        raise InputError(f"slots: {slots}; give at least 1", parameter="slots")
    for variable in backbone.weights:
        variable.trainable = False
    adapted = target_layers(backbone, config.targets)
    layers = {}
    offset = 0
    for path, (parent, attribute) in projection_sites(backbone, TARGETS).items():
        dense = getattr(parent, attribute)
        if getattr(dense, "quantization_mode", None) is not None:
            continue  # a quantized kernel computes in its own way
        if path not in adapted:
            _install(parent, attribute, LoraDense(dense))
            continue
        seed_of_layer = layer_seed(seed, offset)
        layer = LoraDense(dense, slots, max_rank, config.dropout, seed_of_layer, tuple(config.targets), config.init)
        _install(parent, attribute, layer)
        layer.set_slot(0, config, seed_of_layer)
        layers[path] = layer
        offset += 1
    return layers


def _install(parent, attribute, layer):
    """Put `layer` in place of `parent.<attribute>`, tracked by `parent` so the model trains and saves it.

    No public Keras API adds a sublayer to a built layer: its state tracker is locked after
    `build`. Keras's own `Dense.enable_lora` unlocks it the same way to add its weights.
    """
    parent._tracker.unlock()
    try:
        setattr(parent, attribute, layer)
    finally:
        parent._tracker.lock()


def all_projections(backbone: keras.Model) -> dict[str, LoraDense]:
    """Every `LoraDense` of `backbone` (adapted or plain), keyed by path."""
    layers = {}
    for path, (parent, attribute) in projection_sites(backbone, TARGETS).items():
        layer = getattr(parent, attribute)
        if isinstance(layer, LoraDense):
            layers[path] = layer
    return layers


def lora_layers(backbone: keras.Model) -> dict[str, LoraDense]:
    """The adapted layers of `backbone` (a `LoraDense` with slots), keyed by path; empty without LoRA.

    Example: `lora_layers(backbone)["encoder/0/self_attention/q"].slots` -> `1`.
    """
    return {path: layer for path, layer in all_projections(backbone).items() if layer.slots}


def _adapted(backbone):
    layers = lora_layers(backbone)
    if not layers:
        raise InputError("backbone: it has no LoRA adapters; add_lora first", parameter="backbone")
    return layers


def set_slot(backbone: keras.Model, slot: int, config: LoraConfig, seed: int | None) -> None:
    """Put `add_lora(backbone, config, seed)`'s initial adapter in slot `slot` of every adapted layer.

    Example: `set_slot(backbone, 2, LoraConfig(rank=16), seed=0)`.
    """
    for offset, layer in enumerate(_adapted(backbone).values()):
        layer.set_slot(slot, config, layer_seed(seed, offset))


def clear_slots(backbone: keras.Model, first: int = 0) -> None:
    """Empty every slot from `first` on (their rows compute the base)."""
    for layer in _adapted(backbone).values():
        for slot in range(first, layer.slots):
            layer.clear_slot(slot)


def activate_slots(backbone: keras.Model, count: int) -> None:
    """Train or evaluate the first `count` slots: batches of `count * b` rows, slot `j` in rows `j*b..`.

    Example: `activate_slots(backbone, 3)`.
    """
    for layer in _adapted(backbone).values():
        layer.activate(count)


def slot_count(backbone: keras.Model) -> int:
    """How many adapters each adapted layer of `backbone` holds (0 without LoRA)."""
    layers = lora_layers(backbone)
    return next(iter(layers.values())).slots if layers else 0


def active_slots(backbone: keras.Model):
    """The slots a batch holds (`activate_slots`): the layers' `active` variable, read inside traced steps
    (a Python number where traced shapes are static: `lora_keras.backends.devices.static_shapes`); else 1.

    Example: `ops.reshape(per_row, (active_slots(backbone), -1))` -> one row per slot.
    """
    if slot_count(backbone) <= 1:
        return 1
    layer = next(iter(lora_layers(backbone).values()))
    return layer.active_count if static_shapes() else keras.ops.cast(layer.active, "int32")


def reset_lora(backbone: keras.Model, config: LoraConfig, seed: int | None, slot: int = 0) -> None:
    """Put slot `slot` back to `add_lora(backbone, config, seed)`'s initial adapter, dropout masks rewound.

    With the same integer `seed`, `A` gets the values `add_lora` drew, `B` zero and the dropout
    masks their first draw again, so a model can be trained afresh without being rebuilt.

    Example:
    ```python
    reset_lora(backbone, LoraConfig(rank=4), seed=0)
    ```
    """
    set_slot(backbone, slot, config, seed)
    for layer in lora_layers(backbone).values():
        layer.reset_dropout()


def load_slot(backbone: keras.Model, slot: int, config: LoraConfig, weights: dict[str, np.ndarray],
              source: str = "adapter") -> None:
    """Set slot `slot` to an adapter's `config` and weights (`{"<path>/lora_a": ..., "<path>/lora_b": ...}`).

    Raises `InputError` naming `source` when the weights do not fit the layers.

    Example: `load_slot(backbone, 0, *read_adapter("adapter.safetensors"))`.
    """
    layers = _adapted(backbone)
    expected = {f"{path}/lora_{ab}" for path in layers for ab in ("a", "b")}
    if expected != set(weights):
        raise InputError(f"adapter: {source} does not fit this model (its layers differ); "
                         "pass the base model it was trained on", parameter="adapter")
    for path, layer in layers.items():
        a, b = weights[f"{path}/lora_a"], weights[f"{path}/lora_b"]
        d_in, d_out = layer.base.kernel.shape
        if a.shape != (d_in, config.rank) or b.shape != (config.rank, d_out):
            raise InputError(
                f"adapter: {source} has {path} of shapes {a.shape} and {b.shape}, the model needs "
                f"({d_in}, {config.rank}) and ({config.rank}, {d_out}); pass the matching base model",
                parameter="adapter")
    for path, layer in layers.items():
        layer.load_slot(slot, config, weights[f"{path}/lora_a"], weights[f"{path}/lora_b"])


def adapter_config(backbone: keras.Model, slot: int = 0) -> LoraConfig:
    """The `LoraConfig` slot `slot` of `backbone`'s adapters holds.

    Example: `adapter_config(backbone).rank` -> `4`.
    """
    return next(iter(_adapted(backbone).values())).slot_config(slot)


def adapter_weights(backbone: keras.Model, slot: int = 0) -> dict[str, np.ndarray]:
    """`{"<path>/lora_a": (d_in, rank), "<path>/lora_b": (rank, d_out)}` of slot `slot`, each layer."""
    weights = {}
    for path, layer in _adapted(backbone).items():
        weights[f"{path}/lora_a"], weights[f"{path}/lora_b"] = layer.slot_weights(slot)
    return weights


def adapter_variables(backbone: keras.Model) -> list:
    """Every weight LoRA added to `backbone` (`A`, `B`, scales, slot counts), none of the base's."""
    return [v for layer in lora_layers(backbone).values() for v in layer.adapter_variables]


def lora_parameter_count(backbone: keras.Model, config: LoraConfig) -> int:
    """`rank * (d_in + d_out)` summed over the layers `config` targets: one adapter's trainable parameters.

    Example:
    ```python
    lora_parameter_count(backbone, LoraConfig(rank=4))
    ```
    """
    return sum(
        config.rank * (dense.kernel.shape[0] + dense.kernel.shape[1])
        for dense in target_layers(backbone, config.targets).values()
    )


def merged_weights(backbone: keras.Model, slot: int = 0) -> list[np.ndarray]:
    """`backbone`'s weights with slot `slot` folded in (`W + scale * A @ B`), in an unadapted backbone's order.

    An unadapted copy given these weights computes what slot `slot` of `backbone` computes.

    Example:
    ```python
    copy.set_weights(merged_weights(backbone))
    ```
    """
    layers = lora_layers(backbone)
    merged = {id(layer.base.kernel): layer for layer in layers.values()}
    added = {id(v) for v in adapter_variables(backbone)}
    return [
        merged[id(v)].merged_kernel(slot) if id(v) in merged else keras.ops.convert_to_numpy(v)
        for v in backbone.weights
        if id(v) not in added
    ]


def merge_lora(backbone: keras.Model) -> None:
    """Fold the adapter into each kernel (`W += scale * A @ B`) and zero `B`: outputs unchanged.

    For a backbone with one adapter per layer (`add_lora`'s default); exporting the kernels
    then needs no LoRA. A packed backbone's slots are merged into copies with `merged_weights`.

    Example:
    ```python
    merge_lora(backbone)
    ```
    """
    layers = _adapted(backbone)
    if slot_count(backbone) > 1:
        raise InputError("backbone: it holds several adapters per layer, one W cannot take them all; "
                         "use merged_weights(backbone, slot) for one", parameter="backbone")
    for layer in layers.values():
        a, b = layer.slot_weights(0)
        layer.base.kernel.assign(layer.merged_kernel(0))
        layer.load_slot(0, layer.configs[0], a, np.zeros_like(b))
