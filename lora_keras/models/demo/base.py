"""The offline demo's base model: a small T5 that knows seven invented languages, shipped as a preset.

`corpus` generates English -> invented-language pairs; this module trains a small T5 (2+2 layers,
width 64, a 1,000-piece SentencePiece vocabulary) from scratch on the seven base languages
(`corpus.BASE_LANGUAGES`), every one behind its own "translate English to <language>: " prefix, and
saves it as a keras-hub preset with `lora_keras_task.json` (the task, the build time and the quality
per language: loss per real target token, token accuracy, greedy BLEU/chrF) and `manifest.json`
(the `DemoConfig`, its key and the files' checksums). `scripts/build_demo_base.py` builds the one
shipped in `preset/` for `DemoConfig()` (about 30 minutes on 2 CPU cores, deterministic).

`ensure_demo_base` gives the shipped preset when its manifest matches the config; another config is
trained once and cached under `$LORA_KERAS_CACHE` (default `~/.cache/lora-keras`) by the config's key.
The sweep (`load_base("tiny")`) then adapts that base with LoRA to English->Dravic
(`adaptation_pairs`), an eighth language that combines every grammar feature of the base languages,
which the base never saw together and cannot translate out of the box.

Example:
```python
preset = ensure_demo_base(DemoConfig())          # the shipped preset: nothing trained
train = adaptation_pairs("train", TRAIN_EXAMPLES, seed=0)   # English->Dravic pairs
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
CORPUS_VERSION = 3  # bump when demo_corpus changes what it generates
TRAINING_VERSION = 3  # bump when the base's training changes (2: loss per real target token; 3: multilingual)
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
    examples: int = 8000  # per base language
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    quality_examples: int = 300  # validation pairs per language for the quality report

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


SHIPPED_PRESET = pathlib.Path(__file__).resolve().parent / "preset"
MANIFEST_FILE = "manifest.json"


def shipped_preset(config: DemoConfig) -> pathlib.Path | None:
    """The demo base shipped in the package, if it was built from `config`; else None.

    Example:
    ```python
    shipped_preset(DemoConfig())   # .../lora_keras/models/demo/preset
    ```
    """
    manifest = SHIPPED_PRESET / MANIFEST_FILE
    if not manifest.is_file() or json.loads(manifest.read_text())["config_key"] != config.key():
        return None
    return SHIPPED_PRESET


def ensure_demo_base(
    config: DemoConfig, cache_root: str | os.PathLike | None = None, verbose: int = 1
) -> pathlib.Path:
    """Path of the demo base preset for `config`: the shipped one, else cached, else trained now.

    Args:
        config: the demo base's size and training.
        cache_root: where presets built here are cached; `default_cache_root()` when None.
        verbose: 1 to report the one-time training, 0 for silence.

    Returns:
        The preset directory (`load_preset` reads it).

    Example:
    ```python
    preset = ensure_demo_base(DemoConfig())   # the shipped base: no training
    ```
    """
    shipped = shipped_preset(config)
    if shipped is not None:
        return shipped
    root = pathlib.Path(cache_root or default_cache_root())
    preset = root / f"demo-base-{config.key()}"
    if (preset / TASK_FILE).is_file():
        return preset
    root.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"Building the demo base model for this config once (cached in {preset}); "
              "the shipped one took 31 minutes on 2 CPU cores.", flush=True)
    build_demo_base(config, preset, verbose)
    return preset


def build_demo_base(config: DemoConfig, directory: str | os.PathLike, verbose: int = 1) -> pathlib.Path:
    """Train the demo base for `config` into `directory` (a new path), with a checksum manifest.

    The directory appears only when complete: a killed build never looks finished.

    Example:
    ```python
    build_demo_base(DemoConfig(), "demo-base")   # what scripts/build_demo_base.py does
    ```
    """
    directory = pathlib.Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix="demo-base-", dir=directory.parent))
    try:
        _train_demo_base(config, staging, verbose)
        write_manifest(staging, config)
        try:
            staging.rename(directory)  # atomic
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def file_checksums(directory: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file of a preset directory but the manifest, by relative path.

    Example:
    ```python
    file_checksums(SHIPPED_PRESET)["model.weights.h5"]   # "3f2a..."
    ```
    """
    root = pathlib.Path(directory)
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }


def write_manifest(directory: str | os.PathLike, config: DemoConfig) -> None:
    """Record the config that built the preset in `directory` and its files' checksums."""
    manifest = {"config_key": config.key(), "config": dataclasses.asdict(config),
                "corpus_version": CORPUS_VERSION, "training_version": TRAINING_VERSION,
                "files": file_checksums(directory)}
    (pathlib.Path(directory) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def _train_demo_base(config: DemoConfig, directory: pathlib.Path, verbose: int) -> None:
    # heavy: TensorFlow, imported only when the demo base is built (once per cache)
    import keras
    import keras_hub

    from lora_keras.data.pipeline import make_dataset
    from lora_keras.models.token_loss import TokenAccuracy, TokenLossSeq2SeqLM

    started = time.perf_counter()
    corpora = _base_corpora(config)
    tokenizer = keras_hub.models.T5Tokenizer(proto=_demo_vocabulary(config, corpora))
    train, val = _tokenized(tokenizer, corpora, config)
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
    model.fit(
        make_dataset(train, config.batch_size, shuffle=True, seed=config.seed),
        epochs=config.epochs,
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=verbose,
    )
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    task = {
        "source_lang": demo_corpus.SOURCE_LANGUAGE,
        "target_lang": demo_corpus.ADAPT_LANGUAGE,
        "base_langs": list(demo_corpus.BASE_LANGUAGES),
        "build_seconds": round(time.perf_counter() - started, 1),
        "config": dataclasses.asdict(config),
        "quality": measure_quality(model, tokenizer, val),
    }
    (directory / TASK_FILE).write_text(json.dumps(task, indent=2) + "\n")


def _base_corpora(config: DemoConfig) -> dict[str, list[tuple[str, str]]]:
    """Each base language's training pairs: `config.examples` of them, one seed per language."""
    return {
        language: demo_corpus.generate_pairs(language, config.examples, config.seed + index)
        for index, language in enumerate(demo_corpus.BASE_LANGUAGES)
    }


def _demo_vocabulary(config: DemoConfig, corpora: dict[str, list[tuple[str, str]]]) -> bytes:
    """A SentencePiece model over every language's text, the adaptation language's prefix included."""
    from lora_keras.models.tokenizer import train_sentencepiece

    adapt = adaptation_pairs("train", TRAIN_EXAMPLES, config.seed)
    texts = [prefix(language) + s for language, pairs in corpora.items() for s, _ in pairs]
    texts += [prefix(demo_corpus.ADAPT_LANGUAGE) + s for s, _ in adapt]
    texts += [t for pairs in corpora.values() for _, t in pairs] + [t for _, t in adapt]
    return train_sentencepiece(texts, config.vocabulary_size)


def _tokenized(tokenizer, corpora: dict, config: DemoConfig):
    """The base's training set (every base language, shuffled together) and each language's val pairs."""
    import numpy as np

    from lora_keras.data.pipeline import TokenizedPairs, tokenize_pairs

    parts = [tokenize_pairs(tokenizer, pairs, prefix(language)) for language, pairs in corpora.items()]
    width = max(p.source_ids.shape[1] for p in parts), max(p.target_ids.shape[1] for p in parts)
    sources = np.concatenate([np.pad(p.source_ids, ((0, 0), (0, width[0] - p.source_ids.shape[1]))) for p in parts])
    targets = np.concatenate([np.pad(p.target_ids, ((0, 0), (0, width[1] - p.target_ids.shape[1]))) for p in parts])
    val = {
        language: demo_corpus.generate_pairs(language, config.quality_examples, config.seed, "val")
        for language in (*demo_corpus.BASE_LANGUAGES, demo_corpus.ADAPT_LANGUAGE)
    }
    return TokenizedPairs(sources, targets), val


def measure_quality(model, tokenizer, val: dict[str, list[tuple[str, str]]]) -> dict:
    """Per language: the loss per real target token, token accuracy (teacher forced) and greedy BLEU.

    The adaptation language's figures are the unadapted base's, the sweep's starting point.

    Example:
    ```python
    measure_quality(model, tokenizer, {"Velish": demo_corpus.generate_pairs("Velish", 300, 0, "val")})
    ```
    """
    from lora_keras.data.pipeline import make_dataset, tokenize_pairs
    from lora_keras.evaluation import Translator, translation_scores

    # XLA's compile (seconds) pays off over thousands of sentences, not over a test's few
    sentences = sum(map(len, val.values()))
    translator = Translator(model.backbone, tokenizer, max_new_tokens=48, jit_compile=sentences >= 1000)
    quality = {}
    for language, pairs in val.items():
        tokens = tokenize_pairs(tokenizer, pairs, prefix(language))
        loss, accuracy = model.evaluate(make_dataset(tokens, 64), verbose=0)[:2]
        hypotheses = translator([prefix(language) + s for s, _ in pairs])
        scores = translation_scores(hypotheses, [t for _, t in pairs])
        quality[language] = {
            "val_loss_per_token": round(float(loss), 4),
            "token_accuracy": round(float(accuracy), 4),
            "bleu": round(scores["bleu"], 2),
            "chrf": round(scores["chrf"], 2),
        }
    return quality
