"""TensorBoard HParams: the experiment (domains, metric columns) and one session per trial."""

import pathlib
import shutil

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from tuners.hypermodel import targets_name

METRICS = (
    ("epoch_loss", "final loss"),
    ("val_loss", "val loss"),
    ("epoch_time_s", "epoch time (s)"),
    ("tokens_per_s", "tokens/s"),
    ("peak_memory_mb", "peak memory (MiB)"),
    ("trainable_params", "trainable params"),
    ("bleu", "BLEU"),
)


def experiment_hparams(space, max_epochs):
    """`HParam`s: discrete domains for the six LoRA hyperparameters, epochs reached in 1..max."""
    discrete = hparams_api.Discrete
    return [
        hparams_api.HParam("rank", discrete([int(r) for r in space.ranks])),
        hparams_api.HParam("batch_size", discrete([int(b) for b in space.batch_sizes])),
        hparams_api.HParam("learning_rate", discrete([float(lr) for lr in space.learning_rates])),
        hparams_api.HParam("lora_alpha", discrete(list(space.alphas))),
        hparams_api.HParam("targets", discrete([targets_name(t) for t in space.target_sets])),
        hparams_api.HParam("lora_dropout", discrete([float(p) for p in space.lora_dropouts])),
        # Hyperband trials stop at fewer epochs than the maximum.
        hparams_api.HParam("epochs", hparams_api.IntInterval(1, int(max_epochs))),
    ]


def write_experiment(log_dir, space, max_epochs):
    """Declare the HParams experiment at the root of `log_dir` (once: a resumed run keeps it)."""
    if any(pathlib.Path(log_dir).glob("events.out.tfevents*")):
        return
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hparams_api.hparams_config(
            hparams=experiment_hparams(space, max_epochs),
            metrics=[hparams_api.Metric(tag, display_name=name) for tag, name in METRICS],
        )
    writer.close()


def trial_hparams(hp, space, epochs):
    """The HParams row of a trial: its six hyperparameters and the epochs it trains to."""
    return {**space.trial_values(hp), "epochs": int(epochs)}


def write_figures(log_dir, paths):
    """The report's PNG plots as TensorBoard images (IMAGES tab) in `log_dir`."""
    from lora_keras.plots import figure_images

    shutil.rmtree(log_dir, ignore_errors=True)  # a resumed run replaces, not repeats, its images
    if not paths:
        return
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for name, image in figure_images(paths).items():
            tf.summary.image(name, image[None, ...], step=0)
    writer.close()
