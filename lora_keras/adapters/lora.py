"""LoRA adapters on the projections of a keras-hub `T5Backbone`: add, reset, count, merge.

Each adapted `Dense` computes `x @ (W + (alpha / rank) * A @ B)` with `W` frozen,
`A` (d_in x rank) random and `B` (rank x d_out) zero, so the adapted model equals
the base at step 0 and trains `rank * (d_in + d_out)` parameters per layer. `A` is
drawn as PEFT draws it (`init="peft"`: uniform in +-1/sqrt(d_in), PyTorch's
`kaiming_uniform_(a=sqrt(5))`), so learning rates carry over from PEFT recipes;
`init="keras"` draws it as Keras's `enable_lora` does (He uniform, +-sqrt(6/d_in)).
The weights are Keras's own `Dense.enable_lora` state; how a layer computes with
them (PEFT's unmerged training path and LoRA dropout) is its `Projection`
(`lora_keras.adapters.projection`). keras-hub's `Backbone.enable_lora()` defaults
match none of T5's layers, hence `target_layers`.

Example:
```python
backbone = keras_hub.models.T5Backbone(vocabulary_size=300, num_layers=2,
    num_heads=2, hidden_dim=32, intermediate_dim=64)
layers = add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")))
merge_lora(backbone)            # W += (alpha / rank) A @ B; outputs unchanged
```
"""

from __future__ import annotations

import keras
import numpy as np

from lora_keras.adapters.config import INITIALIZERS, TARGETS, LoraConfig, check_rank, target_layers
from lora_keras.adapters.projection import install_projection, projection_of


def add_lora(backbone: keras.Model, config: LoraConfig, seed: int | None = None) -> dict[str, keras.layers.Dense]:
    """Freeze `backbone` and put a LoRA adapter on each targeted layer.

    Args:
        backbone: a keras-hub `T5Backbone`.
        config: rank, alpha, targets, dropout and init.
        seed: seeds `A` (layer `i` gets `seed + i`) and the dropout masks; None draws freshly.

    Returns:
        The adapted layers keyed by path. The model's output is unchanged until training moves `B`.

    Example:
    ```python
    add_lora(backbone, LoraConfig(rank=4), seed=0)
    ```
    """
    check_rank(backbone, config)
    layers = target_layers(backbone, config.targets)
    for variable in backbone.weights:
        variable.trainable = False
    for offset, dense in enumerate(layers.values()):
        dense.enable_lora(
            config.rank,
            lora_alpha=config.effective_alpha,
            a_initializer=_a_initializer(config.init, seed, offset),
        )
        install_projection(dense, config.dropout, None if seed is None else seed + offset, config.init)
    return layers


def _a_initializer(init, seed, offset):
    return INITIALIZERS[init](None if seed is None else seed + offset)


def reset_lora(backbone: keras.Model, config: LoraConfig, seed: int) -> None:
    """Put the adapters of `add_lora(backbone, config, seed)` back to their initial values.

    With the same integer `seed`, `A` gets the values `add_lora` drew, `B` zero
    and the dropout masks their first draw again, so a model can be trained afresh
    without being rebuilt.

    Example:
    ```python
    reset_lora(backbone, LoraConfig(rank=4), seed=0)
    ```
    """
    for offset, dense in enumerate(target_layers(backbone, config.targets).values()):
        shape = tuple(dense.lora_kernel_a.shape)
        dense.lora_kernel_a.assign(_a_initializer(config.init, seed, offset)(shape))
        dense.lora_kernel_b.assign(np.zeros(dense.lora_kernel_b.shape, "float32"))
        projection = projection_of(dense)
        if projection is not None:
            projection.reset()


def lora_parameter_count(backbone: keras.Model, config: LoraConfig) -> int:
    """`rank * (d_in + d_out)` summed over the layers `config` targets (before adding).

    Example:
    ```python
    lora_parameter_count(backbone, LoraConfig(rank=4))
    ```
    """
    return sum(
        config.rank * (dense.kernel.shape[0] + dense.kernel.shape[1])
        for dense in target_layers(backbone, config.targets).values()
    )


def adapted_layers(backbone: keras.Model) -> dict[str, keras.layers.Dense]:
    """The LoRA-enabled layers of `backbone`, keyed by path."""
    return {
        path: dense
        for path, dense in target_layers(backbone, TARGETS).items()
        if dense.lora_enabled
    }


def adapter_config(backbone: keras.Model) -> LoraConfig:
    """The `LoraConfig` the adapters of `backbone` were added with."""
    layers = adapted_layers(backbone)
    if not layers:
        raise ValueError("the backbone has no LoRA adapters")
    first = next(iter(layers.values()))
    projection = projection_of(first)
    targets = sorted({path.split("/")[-1].split("_")[0] for path in layers})
    return LoraConfig(
        first.lora_rank, first.lora_alpha, tuple(targets),
        projection.dropout if projection else 0.0,
        (projection.init if projection else None) or "keras",  # Keras's enable_lora alone draws A He-uniform
    )


def adapter_weights(backbone: keras.Model) -> dict[str, np.ndarray]:
    """`{"<path>/lora_a": array, "<path>/lora_b": array}` for each adapted layer."""
    weights = {}
    for path, dense in adapted_layers(backbone).items():
        weights[f"{path}/lora_a"] = keras.ops.convert_to_numpy(dense.lora_kernel_a)
        weights[f"{path}/lora_b"] = keras.ops.convert_to_numpy(dense.lora_kernel_b)
    return weights


def merge_lora(backbone: keras.Model) -> None:
    """Fold every adapter into its kernel (`W += scale * A @ B`) and zero `B`.

    The merged kernel is the one Keras computes on each adapted call, bit for bit, so the
    model's outputs are unchanged; exporting the kernels then needs no LoRA.

    Example:
    ```python
    merge_lora(backbone)
    ```
    """
    for dense in adapted_layers(backbone).values():
        merged = keras.ops.convert_to_numpy(dense.kernel)  # Keras's own W + (alpha / rank) A @ B
        dense._kernel.assign(merged)
        dense.lora_kernel_b.assign(np.zeros(dense.lora_kernel_b.shape, "float32"))


def merged_weights(backbone: keras.Model) -> list[np.ndarray]:
    """`backbone`'s weights with each adapter folded in, in an unadapted backbone's `weights` order.

    Each adapted kernel is the one Keras computes on an adapted call, so an
    unadapted copy given these weights computes what `backbone` does in inference, bit for bit.

    Example:
    ```python
    copy.set_weights(merged_weights(backbone))
    ```
    """
    adapted = {id(dense._kernel): dense for dense in adapted_layers(backbone).values()}
    adapters = {id(v) for dense in adapted.values() for v in (dense.lora_kernel_a, dense.lora_kernel_b)}
    return [
        keras.ops.convert_to_numpy(adapted[id(v)].kernel if id(v) in adapted else v)
        for v in backbone.weights
        if id(v) not in adapters
    ]
