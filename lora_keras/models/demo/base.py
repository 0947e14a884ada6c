"""The offline demo: a small T5 trained once on English->Velish, adapted to English->Dravic.

The base is trained from scratch on the base language and cached in a keras-hub
preset directory keyed by its config, so only the first run pays for it. The
sweep then adapts it with LoRA to a different language with the same words but
another grammar (see `demo_corpus`), which the base cannot do out of the box.

Example:
```python
preset = ensure_demo_base(DemoConfig())          # minutes the first time, then cached
train = adaptation_pairs("train", 3000, seed=0)
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time

from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.models.masking_warning import masking_warning_ignored

TASK_FILE = "lora_keras_task.json"
CORPUS_VERSION = 2  # bump when demo_corpus changes what it generates
TRAINING_VERSION = 2  # bump when the base's training changes (2: loss per real target token)
TRAIN_EXAMPLES = 3000
VAL_EXAMPLES = 300


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Size of the demo base model and of its one-time training.

    Example:
    ```python
    ensure_demo_base(DemoConfig(examples=2000, epochs=1))   # a smaller, quicker base
    ```
    """

    vocabulary_size: int = 1000
    num_layers: int = 2
    num_heads: int = 4
    hidden_dim: int = 64
    intermediate_dim: int = 128
    examples: int = 20000
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0

    def key(self) -> str:
        """A short hash of the config and the corpus and training versions: the cache's key."""
        text = json.dumps(
            {**dataclasses.asdict(self), "corpus": CORPUS_VERSION, "training": TRAINING_VERSION}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def prefix(language: str) -> str:
    """The T5 task prefix for translating the demo's source language into `language`.

    Example:
    ```python
    prefix("Dravic")   # "translate English to Dravic: "
    ```
    """
    return f"translate {demo_corpus.SOURCE_LANGUAGE} to {language}: "


def adaptation_pairs(split: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """The sweep's task: English -> Dravic pairs (`split` is "train" or "val").

    Example:
    ```python
    train = adaptation_pairs("train", TRAIN_EXAMPLES, seed=0)
    ```
    """
    return demo_corpus.generate_pairs(demo_corpus.ADAPT_LANGUAGE, count, seed, split)


def default_cache_root() -> pathlib.Path:
    """`$LORA_KERAS_CACHE`, else `~/.cache/lora-keras`.

    Example:
    ```python
    default_cache_root()   # PosixPath("/home/me/.cache/lora-keras")
    ```
    """
    return pathlib.Path(os.environ.get("LORA_KERAS_CACHE", pathlib.Path.home() / ".cache" / "lora-keras"))


def read_task(preset: str | os.PathLike) -> dict:
    """The demo task description stored beside a demo base preset.

    Example:
    ```python
    read_task(ensure_demo_base(DemoConfig()))["target_lang"]   # "Dravic"
    ```
    """
    return json.loads((pathlib.Path(preset) / TASK_FILE).read_text())


def ensure_demo_base(
    config: DemoConfig, cache_root: str | os.PathLike | None = None, verbose: int = 1
) -> pathlib.Path:
    """Path of the cached demo base preset for `config`, training it first if missing.

    Args:
        config: the demo base's size and training.
        cache_root: where presets are cached; `default_cache_root()` when None.
        verbose: 1 to report the one-time training, 0 for silence.

    Returns:
        The preset directory (`load_preset` reads it).

    Example:
    ```python
    preset = ensure_demo_base(DemoConfig())   # minutes the first time, then cached
    ```
    """
    root = pathlib.Path(cache_root or default_cache_root())
    preset = root / f"demo-base-{config.key()}"
    if (preset / TASK_FILE).is_file():
        return preset
    root.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"Building the demo base model once (cached in {preset}); "
              "about 6 minutes on 2 CPU cores.", flush=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix="demo-base-", dir=root))
    try:
        _train_demo_base(config, staging, verbose)
        try:
            staging.rename(preset)  # atomic: a killed build never looks finished
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return preset


def _train_demo_base(config: DemoConfig, directory: pathlib.Path, verbose: int) -> None:
    # heavy: TensorFlow, imported only when the demo base is built (once per cache)
    import keras
    import keras_hub

    from lora_keras.data.pipeline import make_dataset, tokenize_pairs
    from lora_keras.models.token_loss import TokenAccuracy, TokenLossSeq2SeqLM
    from lora_keras.models.tokenizer import train_sentencepiece

    started = time.perf_counter()
    base_language, adapt_language = demo_corpus.BASE_LANGUAGE, demo_corpus.ADAPT_LANGUAGE
    base_train = demo_corpus.generate_pairs(base_language, config.examples, config.seed)
    base_val = demo_corpus.generate_pairs(base_language, VAL_EXAMPLES, config.seed, "val")
    # The vocabulary covers both languages, so the adapted model can spell Dravic.
    adapt_text = demo_corpus.generate_pairs(adapt_language, config.examples, config.seed)
    texts = [prefix(base_language) + s for s, _ in base_train]
    texts += [prefix(adapt_language) + s for s, _ in adapt_text[:TRAIN_EXAMPLES]]
    texts += [t for _, t in base_train] + [t for _, t in adapt_text]
    proto = train_sentencepiece(texts, config.vocabulary_size)
    tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
    train = tokenize_pairs(tokenizer, base_train, prefix(base_language))
    val = tokenize_pairs(tokenizer, base_val, prefix(base_language))

    keras.utils.set_random_seed(config.seed)
    with masking_warning_ignored():
        backbone = keras_hub.models.T5Backbone(
            vocabulary_size=config.vocabulary_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            hidden_dim=config.hidden_dim,
            intermediate_dim=config.intermediate_dim,
            key_value_dim=config.hidden_dim // config.num_heads,
            dropout=0.0,  # too small a model to need it; it would slow learning
            activation="gelu",
            use_gated_activation=True,
            tie_embedding_weights=False,
        )
    model = TokenLossSeq2SeqLM(backbone=backbone, preprocessor=None)
    steps = config.epochs * -(-len(train) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, alpha=0.05, warmup_target=config.learning_rate, warmup_steps=steps // 20
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
        weighted_metrics=[TokenAccuracy()],
    )
    history = model.fit(
        make_dataset(train, config.batch_size, shuffle=True, seed=config.seed),
        validation_data=make_dataset(val, config.batch_size),
        epochs=config.epochs,
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=verbose,
    )
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    task = {
        "source_lang": demo_corpus.SOURCE_LANGUAGE,
        "target_lang": adapt_language,
        "base_lang": base_language,
        "base_val_loss": float(history.history["val_loss"][-1]),
        "base_val_accuracy": float(history.history["val_token_accuracy"][-1]),
        "build_seconds": round(time.perf_counter() - started, 1),
        "config": dataclasses.asdict(config),
    }
    (directory / TASK_FILE).write_text(json.dumps(task, indent=2))
