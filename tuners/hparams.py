"""TensorBoard HParams: the experiment (domains, metric columns) and one session per trial."""

import pathlib
import shutil

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

METRICS = (
    ("epoch_loss", "final loss"),
    ("val_loss", "val loss"),
    ("epoch_time_s", "epoch time (s)"),
    ("tokens_per_s", "tokens/s"),
    ("peak_memory_mb", "peak memory (MiB)"),
    ("trainable_params", "trainable params"),
    ("bleu", "BLEU"),
)


def experiment_hparams(space):
    """`HParam`s with discrete domains for rank, batch_size, learning_rate, lora_alpha."""
    return [
        hparams_api.HParam("rank", hparams_api.Discrete([int(r) for r in space.ranks])),
        hparams_api.HParam("batch_size", hparams_api.Discrete([int(b) for b in space.batch_sizes])),
        hparams_api.HParam(
            "learning_rate", hparams_api.Discrete([float(lr) for lr in space.learning_rates])
        ),
        hparams_api.HParam("lora_alpha", hparams_api.Discrete([float(a) for a in space.alphas])),
    ]


def write_experiment(log_dir, space):
    """Declare the HParams experiment at the root of `log_dir` (once: a resumed run keeps it)."""
    if any(pathlib.Path(log_dir).glob("events.out.tfevents*")):
        return
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hparams_api.hparams_config(
            hparams=experiment_hparams(space),
            metrics=[hparams_api.Metric(tag, display_name=name) for tag, name in METRICS],
        )
    writer.close()


def trial_hparams(hp, space):
    """The HParams row of a trial: its tuned values plus the derived alpha."""
    rank = int(hp.get("rank"))
    return {
        "rank": rank,
        "batch_size": int(hp.get("batch_size")),
        "learning_rate": float(hp.get("learning_rate")),
        "lora_alpha": space.alpha_for(rank),
    }


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
