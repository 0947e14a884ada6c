"""LoRA adapters on the projections of a keras-hub `T5Backbone`.

Each adapted `Dense` computes `x @ (W + (alpha / rank) * A @ B)` with `W` frozen,
`A` (d_in x rank) random and `B` (rank x d_out) zero, so the adapted model equals
the base at step 0 and trains `rank * (d_in + d_out)` parameters per layer. `A` is
drawn as PEFT draws it (`init="peft"`: uniform in +-1/sqrt(d_in), PyTorch's
`kaiming_uniform_(a=sqrt(5))`), so learning rates carry over from PEFT recipes;
`init="keras"` draws it as Keras's `enable_lora` does (He uniform, +-sqrt(6/d_in)).
The math is Keras's own `Dense.enable_lora`; this module picks the T5 layers
(keras-hub's `Backbone.enable_lora()` defaults match none of them), freezes the
base, counts, and saves / loads / merges the adapter weights alone. With
`dropout > 0` a layer trains as PEFT's `lora_dropout` does,
`x @ W + (alpha / rank) * (dropout(x) @ A) @ B`, and infers exactly as above.

Example:
```python
backbone = keras_hub.models.T5Backbone(vocabulary_size=300, num_layers=2,
    num_heads=2, hidden_dim=32, intermediate_dim=64)
layers = add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")))
save_adapter(backbone, "adapter.safetensors")
```
"""

import dataclasses
import json

import keras
import numpy as np

from lora_keras.errors import InputError
from lora_keras.projections import project

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
# How A is drawn. PEFT: kaiming_uniform_(a=sqrt(5)) on a (rank, d_in) weight, a bound of
# gain * sqrt(3 / fan_in) = sqrt(2 / 6) * sqrt(3 / d_in) = 1 / sqrt(d_in), which is
# variance scaling by 1/3 over fan_in. Keras's enable_lora default: He uniform, sqrt(6 / d_in).
INITIALIZERS = {
    "peft": lambda seed: keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=seed),
    "keras": lambda seed: keras.initializers.HeUniform(seed=seed),
}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """What to adapt and how: PEFT's `r`, `lora_alpha`, `target_modules`, `lora_dropout`.

    `alpha=None` means alpha equal to rank (scale 1); `dropout` drops inputs of
    the LoRA branch only, in training only; `init` is how `A` is drawn (`INITIALIZERS`).

    Example: `LoraConfig(rank=4, alpha=8, targets=("q", "v"), dropout=0.1)` scales by 2.
    """

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = ("q", "v")
    dropout: float = 0.0
    init: str = "peft"

    @property
    def effective_alpha(self):
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def scale(self):
        return self.effective_alpha / self.rank

    def to_dict(self):
        return {
            "rank": self.rank,
            "alpha": self.effective_alpha,
            "targets": list(self.targets),
            "dropout": float(self.dropout),
            "init": self.init,
        }


def target_layers(backbone, targets):
    """The `Dense` layers of `backbone` named by `targets`, keyed by a stable path.

    Example: `target_layers(backbone, ["q"])` ->
    `{"encoder/0/self_attention/q": Dense, ..., "decoder/0/cross_attention/q": Dense}`.
    """
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise InputError(
            f"unknown LoRA target(s) {', '.join(unknown)}; "
            f"choose from {' '.join(TARGETS)}"
        )
    if not targets:
        raise InputError(f"no LoRA targets given; choose from {' '.join(TARGETS)}")
    layers = {}
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
                        path = f"{stack_name}/{index}/{attention_name}/{target}"
                        layers[path] = getattr(attention, ATTENTION_TARGETS[target])
            for target in targets:
                for number, attribute in enumerate(FEED_FORWARD_TARGETS.get(target, ())):
                    dense = getattr(block, attribute, None)
                    if dense is None:  # no gate projector in a plain ReLU T5
                        continue
                    suffix = f"{target}_{number}" if target == "wi" else target
                    layers[f"{stack_name}/{index}/feed_forward/{suffix}"] = dense
    return layers


def check_rank(backbone, config):
    """Raise `InputError` unless `config` is valid and its rank fits every targeted layer."""
    if not isinstance(config.rank, int) or config.rank < 1:
        raise InputError(f"LoRA rank must be a positive integer, got {config.rank}")
    if config.alpha is not None and config.alpha <= 0:
        raise InputError(f"LoRA alpha must be positive, got {config.alpha}")
    if not 0 <= config.dropout < 1:
        raise InputError(f"LoRA dropout must be at least 0 and below 1, got {config.dropout}")
    if config.init not in INITIALIZERS:
        raise InputError(f"LoRA init {config.init!r} is unknown; choose from {' '.join(INITIALIZERS)}")
    for path, dense in target_layers(backbone, config.targets).items():
        d_in, d_out = dense.kernel.shape
        if config.rank > min(d_in, d_out):
            raise InputError(
                f"LoRA rank {config.rank} is wider than layer {path} "
                f"({d_in}x{d_out}); use a rank of at most {min(d_in, d_out)}"
            )


def add_lora(backbone, config, seed=None):
    """Freeze `backbone` and put a LoRA adapter on each targeted layer.

    Returns the adapted layers keyed by path. The model's output is unchanged
    until training moves `B` away from zero.
    """
    check_rank(backbone, config)
    layers = target_layers(backbone, config.targets)
    for variable in backbone.weights:
        variable.trainable = False
    for offset, dense in enumerate(layers.values()):
        layer_seed = None if seed is None else seed + offset
        dense.enable_lora(
            config.rank,
            lora_alpha=config.effective_alpha,
            a_initializer=_a_initializer(config.init, seed, offset),
        )
        _train_unmerged(dense, config.dropout, layer_seed)
        dense.lora_init = config.init
    return layers


def _a_initializer(init, seed, offset):
    return INITIALIZERS[init](None if seed is None else seed + offset)


def reset_lora(backbone, config, seed):
    """Put the adapters of `add_lora(backbone, config, seed)` back to their initial values.

    With the same integer `seed`, `A` gets the values `add_lora` drew and `B`
    zero again, so a model can be trained afresh without being rebuilt.

    Example: `reset_lora(backbone, LoraConfig(rank=4), seed=0)`.
    """
    for offset, dense in enumerate(target_layers(backbone, config.targets).values()):
        shape = tuple(dense.lora_kernel_a.shape)
        dense.lora_kernel_a.assign(_a_initializer(config.init, seed, offset)(shape))
        dense.lora_kernel_b.assign(np.zeros(dense.lora_kernel_b.shape, "float32"))
        reset_dropout = dense.__dict__.get("_reset_lora_dropout")
        if reset_dropout is not None:
            reset_dropout()


def _train_unmerged(dense, dropout, seed):
    """Train `dense` as `x @ W + scale * (dropout(x) @ A) @ B`; infer with Keras's merged path.

    Keras's `Dense.enable_lora` merges `W + scale * A @ B` on every call, so
    training forms the full `d_in x d_out` gradient of the merged kernel (one
    more matmul as large as the layer's own) only to project it onto `A` and
    `B`; the unmerged sum needs the input gradient and the two thin products
    alone, as PEFT computes it. It also carries PEFT's dropout on the LoRA
    branch, which Keras lacks. Replacing the layer's `call` keeps its weights,
    names and the adapter format as they are; the seed generator lives in the
    closure because a built Keras layer takes no new state.
    """
    generator = keras.random.SeedGenerator(seed) if dropout > 0 else None

    def call(inputs, training=None):
        if not training:  # Keras's merged kernel, as `merge_lora` and export fold it
            outputs = project(inputs, dense.kernel)
        else:
            scale = dense.lora_alpha / dense.lora_rank
            lora_inputs = inputs if generator is None else keras.random.dropout(inputs, dropout, seed=generator)
            lora = project(project(lora_inputs, dense.lora_kernel_a), dense.lora_kernel_b)
            outputs = project(inputs, dense._kernel) + scale * lora
        if dense.bias is not None:
            outputs = outputs + dense.bias
        return dense.activation(outputs) if dense.activation is not None else outputs

    dense.call = call
    dense.lora_dropout = dropout
    if generator is not None:
        initial_state = keras.ops.convert_to_numpy(generator.state)
        # Outside Keras's attribute tracking, like the generator: `reset_lora` rewinds it.
        object.__setattr__(dense, "_reset_lora_dropout", lambda: generator.state.assign(initial_state))


def lora_parameter_count(backbone, config):
    """`rank * (d_in + d_out)` summed over the targeted layers (before adding)."""
    return sum(
        config.rank * (dense.kernel.shape[0] + dense.kernel.shape[1])
        for dense in target_layers(backbone, config.targets).values()
    )


def adapted_layers(backbone):
    """The LoRA-enabled layers of `backbone`, keyed by path."""
    return {
        path: dense
        for path, dense in target_layers(backbone, TARGETS).items()
        if dense.lora_enabled
    }


def adapter_weights(backbone):
    """`{"<path>/lora_a": array, "<path>/lora_b": array}` for each adapted layer."""
    weights = {}
    for path, dense in adapted_layers(backbone).items():
        weights[f"{path}/lora_a"] = keras.ops.convert_to_numpy(dense.lora_kernel_a)
        weights[f"{path}/lora_b"] = keras.ops.convert_to_numpy(dense.lora_kernel_b)
    return weights


def save_adapter(backbone, path, config=None):
    """Write the adapter weights alone (a safetensors file, config in its metadata).

    Example: `save_adapter(backbone, "logs/sweep/adapters/trial_0.safetensors", config)`.
    """
    from safetensors.numpy import save_file

    layers = adapted_layers(backbone)
    if not layers:
        raise ValueError("the backbone has no LoRA adapters to save")
    first = next(iter(layers.values()))
    if config is None:
        targets = sorted({p.split("/")[-1].split("_")[0] for p in layers})
        config = LoraConfig(first.lora_rank, first.lora_alpha, tuple(targets), getattr(first, "lora_dropout", 0.0),
                            getattr(first, "lora_init", "peft"))
    metadata = {"lora_config": json.dumps(config.to_dict())}
    save_file(adapter_weights(backbone), str(path), metadata=metadata)


def read_adapter(path):
    """`(LoraConfig, {name: array})` from a file written by `save_adapter`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            weights = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as error:  # missing, or not a safetensors file
        raise InputError(f"cannot read adapter {path}: {error}; pass a file written by lora-keras")
    if "lora_config" not in metadata:
        raise InputError(f"{path} has no lora_config metadata; pass a file written by lora-keras")
    raw = json.loads(metadata["lora_config"])
    config = LoraConfig(
        int(raw["rank"]), float(raw["alpha"]), tuple(raw["targets"]), float(raw.get("dropout", 0.0)),
        raw.get("init", "keras"),  # adapters written before the PEFT initialisation drew A as Keras does
    )
    return config, weights


def load_adapter(backbone, path, seed=None):
    """Add LoRA to a fresh `backbone` as saved in `path` and set its weights.

    Example: `load_adapter(backbone, "adapters/trial_0.safetensors")`.
    """
    config, weights = read_adapter(path)
    layers = adapted_layers(backbone) or add_lora(backbone, config, seed=seed)
    expected = {f"{p}/lora_{ab}" for p in layers for ab in ("a", "b")}
    if expected != set(weights):
        raise InputError(
            f"adapter {path} does not fit this model (layers differ); "
            "pass the base model it was trained on"
        )
    for path_, dense in layers.items():
        for name, variable in (("a", dense.lora_kernel_a), ("b", dense.lora_kernel_b)):
            value = weights[f"{path_}/lora_{name}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise InputError(
                    f"adapter {path} has {path_}/lora_{name} of shape {value.shape}, "
                    f"the model needs {tuple(variable.shape)}; pass the matching base model"
                )
            variable.assign(value)
    return config


def merge_lora(backbone):
    """Fold every adapter into its kernel (`W += scale * A @ B`) and zero `B`.

    The merged kernel is the one Keras computes on each adapted call, bit for bit, so the
    model's outputs are unchanged; exporting the kernels then needs no LoRA.
    """
    for dense in adapted_layers(backbone).values():
        merged = keras.ops.convert_to_numpy(dense.kernel)  # Keras's own W + (alpha / rank) A @ B
        dense._kernel.assign(merged)
        dense.lora_kernel_b.assign(np.zeros(dense.lora_kernel_b.shape, "float32"))


def merged_weights(backbone):
    """`backbone`'s weights with each adapter folded in, in an unadapted backbone's `weights` order.

    Each adapted kernel is the one Keras computes on an adapted call, so an
    unadapted copy given these weights (`copy.set_weights(merged_weights(b))`)
    computes what `b` does in inference, bit for bit.
    """
    adapted = {id(dense._kernel): dense for dense in adapted_layers(backbone).values()}
    adapters = {id(v) for dense in adapted.values() for v in (dense.lora_kernel_a, dense.lora_kernel_b)}
    return [
        keras.ops.convert_to_numpy(adapted[id(v)].kernel if id(v) in adapted else v)
        for v in backbone.weights
        if id(v) not in adapters
    ]
