"""The unadapted base on the validation set (`baseline.json`): measured once per run, by one process.

In a distributed sweep every worker may ask; the first takes an advisory lock and measures, the
others go on to their trials, and the chief reads the file at the end (waiting for the lock).
The lock is the kernel's (`flock`), so a killed process never leaves it held.

Example:
```python
baseline = measure_baseline(base, val_tokens, val_texts, run_dir)  # None while another measures
baseline = read_baseline(run_dir)                                   # waits for a measurement underway
```
"""

import contextlib
import fcntl
import json
import pathlib

import keras

from lora_keras.data.pipeline import TokenizedPairs, make_dataset
from lora_keras.models.base import BaseModel
from lora_keras.models.token_loss import perplexity
from lora_keras.runtime.atomic_files import write_atomically
from tuners.hypermodel import EVAL_BATCH_SIZE
from lora_keras.evaluation import SAMPLE_TRANSLATIONS, ValidationTexts

BASELINE_FILE = "baseline.json"
LOCK_FILE = ".baseline.lock"


@contextlib.contextmanager
def _locked(run_dir, wait):
    """Hold the run's baseline lock; yields False, holding nothing, if busy and not `wait`."""
    with open(run_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(run_dir):
    path = run_dir / BASELINE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def measure_baseline(
    base: BaseModel, val_tokens: TokenizedPairs, val_texts: ValidationTexts, run_dir: pathlib.Path,
    model: keras.Model | None = None,
) -> dict | None:
    """Val loss, BLEU and chrF of the unadapted base, from `baseline.json` or measured into it.

    Args:
        base: the frozen T5 the trials start from.
        val_tokens: the validation pairs, tokenized.
        val_texts: the validation set as text, for BLEU and chrF.
        run_dir: the run's directory, which must exist.
        model: a compiled model that computes the base (the trials' model with every adapter slot empty,
            whose traced eval step the trials reuse); None builds and then drops one.

    Returns:
        `val_loss`, `val_perplexity`, `bleu`, `chrf` and the first sources, references and the
        base's translations of them (`sample_*`); None when another process is measuring it now.

    Example: `measure_baseline(base, val_tokens, val_texts, run_dir)["val_loss"]`.
    """
    with _locked(run_dir, wait=False) as mine:
        baseline = _read(run_dir)
        if baseline is not None or not mine:
            return baseline
        own = model is None
        if own:
            model = base.build_model()
            model.compile()  # the loss alone: mean NLL per real target token
        val_loss = model.evaluate(make_dataset(val_tokens, EVAL_BATCH_SIZE), verbose=0, return_dict=True)["loss"]
        scores, translations = val_texts.scores(model.backbone, base.tokenizer, weights=base.weights)
        baseline = {"val_loss": float(val_loss), "val_perplexity": perplexity(float(val_loss)),
                    "bleu": scores["bleu"], "chrf": scores["chrf"],
                    "sample_sources": val_texts.sources[:SAMPLE_TRANSLATIONS],
                    "sample_references": val_texts.references[:SAMPLE_TRANSLATIONS],
                    "sample_translations": translations[:SAMPLE_TRANSLATIONS]}
        # Readers without the lock see all of it or nothing.
        write_atomically(run_dir / BASELINE_FILE, json.dumps(baseline, indent=2))
        if own:
            keras.backend.clear_session()
        return baseline


def read_baseline(run_dir: pathlib.Path) -> dict | None:
    """`baseline.json` of the run, once no process is measuring it.

    Args:
        run_dir: the run's directory.

    Returns:
        The baseline; None if nobody has measured it.

    Example: `read_baseline(pathlib.Path("logs/sweep"))`.
    """
    with _locked(run_dir, wait=True):
        return _read(run_dir)
