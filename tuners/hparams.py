"""TensorBoard HParams: the experiment (domains, metric columns), each trial's session, the report's figures.

A trial's session (its row) is started and ended by the trial runner (`tuners.trial_runner`)
with `start_session` / `end_session`, written with TensorBoard's own event writer on any backend.

Example:
```python
write_experiment(run_dir / "tensorboard", SearchSpace(), max_epochs=2)
```
"""

import pathlib
import shutil
import struct
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from tuners.search_space import SearchSpace, targets_name

# (tag, column title, what the number is)
METRICS = (
    ("epoch_loss", "final loss",
     "training loss of the last epoch: mean negative log-likelihood (nats) per real target token, "
     "summed over the epoch's batches (LoRA dropout on, weights moving) and divided by their real tokens"),
    ("val_loss", "val loss",
     "mean negative log-likelihood (nats) per real (non-padding) target token of the whole validation set "
     "after the last epoch, teacher forced; what transformers' T5 loss gives on the same pairs"),
    ("val_perplexity", "val perplexity", "exp(val loss): perplexity per real target token"),
    ("epoch_time_s", "epoch time (s)",
     "the configuration's epoch of training alone, validation excluded: measured in its own fit, or for a "
     "packed trial its mean step time alone times its steps"),
    ("tokens_per_s", "tokens/s", "real (non-padding) source and target tokens trained per second of epoch time"),
    ("peak_memory_mb", "peak memory (MiB)",
     "the configuration's peak memory over a few steps alone after a warm-up at its batch size: GPU allocator "
     "peak (reset first), or on CPU the process's RSS before its first training step plus those steps' rise "
     "(docs/outputs.md)"),
    ("trainable_params", "trainable params", "LoRA parameters trained: rank x (d_in + d_out) per adapted layer"),
    ("bleu", "BLEU", "sacrebleu corpus BLEU of greedy translations of the validation set"),
    ("val_loss_ci_low", "val loss CI low",
     "lower end of the val loss's 95% confidence interval over validation pairs (bootstrap of per-pair NLL)"),
    ("val_loss_ci_high", "val loss CI high",
     "upper end of the val loss's 95% confidence interval over validation pairs (bootstrap of per-pair NLL)"),
    ("bleu_ci_low", "BLEU CI low", "lower end of BLEU's 95% confidence interval (sacrebleu's bootstrap)"),
    ("bleu_ci_high", "BLEU CI high", "upper end of BLEU's 95% confidence interval (sacrebleu's bootstrap)"),
    ("chrf", "chrF", "sacrebleu corpus chrF of greedy translations of the validation set"),
    ("chrf_ci_low", "chrF CI low", "lower end of chrF's 95% confidence interval (sacrebleu's bootstrap)"),
    ("chrf_ci_high", "chrF CI high", "upper end of chrF's 95% confidence interval (sacrebleu's bootstrap)"),
)
HPARAM_DESCRIPTIONS = {
    "rank": "LoRA rank r",
    "batch_size": "sentence pairs per training step",
    "learning_rate": "Adam learning rate",
    "lora_alpha": "LoRA alpha; the adapter is scaled by alpha / rank",
    "targets": "projections adapted (q, k, v, o of every attention; wi, wo of every feed-forward)",
    "lora_dropout": "dropout on the LoRA branch's input, in training only",
    "epochs": "epochs the trial trained to",
    "precision": "training precision: float32, mixed_bfloat16 or mixed_float16 (variables float32)",
    "seed": "training seed: LoRA initialisation, dropout masks and data order (--seed, --repeats); same pairs",
}


def experiment_hparams(space: SearchSpace, max_epochs: int, precision: str = "float32") -> list:
    """The experiment's hyperparameters: discrete domains for the six LoRA ones and the seed, epochs reached in 1..max.

    Args:
        space: the sweep's search space.
        max_epochs: the most epochs a trial trains to.
        precision: the run's training precision (one per run).

    Returns:
        One `HParam` per hyperparameter, with its description.

    Example: `{h.name: h.domain for h in experiment_hparams(SearchSpace(), 2)}["rank"].values` -> `[1, 4, 16]`.
    """
    discrete = hparams_summary.Discrete
    domains = {
        "rank": discrete([int(r) for r in space.ranks]),
        "batch_size": discrete([int(b) for b in space.batch_sizes]),
        "learning_rate": discrete([float(lr) for lr in space.learning_rates]),
        "lora_alpha": discrete(list(space.alphas)),
        "targets": discrete([targets_name(t) for t in space.target_sets]),
        "lora_dropout": discrete([float(p) for p in space.lora_dropouts]),
        # Hyperband trials stop at fewer epochs than the maximum.
        "epochs": hparams_summary.IntInterval(1, int(max_epochs)),
        "precision": discrete([str(precision)]),
        "seed": discrete([int(s) for s in space.seeds]),
    }
    return [hparams_summary.HParam(name, domain, description=HPARAM_DESCRIPTIONS[name]) for name, domain in domains.items()]


def varying_hparams(space: SearchSpace, epochs_vary: bool = False) -> set[str]:
    """The names of the hyperparameters that take more than one value in a run of `space`.

    Args:
        space: the sweep's search space.
        epochs_vary: whether trials train to different epochs (a strategy that budgets in epochs).

    Returns:
        The names, `epochs` included when `epochs_vary`.

    Example: `varying_hparams(SearchSpace())` -> `{"rank", "batch_size"}`.
    """
    counts = {
        "rank": len(space.ranks), "batch_size": len(space.batch_sizes), "learning_rate": len(space.learning_rates),
        "lora_alpha": len(space.lora_alphas) if space.lora_alphas else len(space.ranks),
        "targets": len(space.target_sets), "lora_dropout": len(space.lora_dropouts), "seed": len(space.seeds),
    }
    return {name for name, count in counts.items() if count > 1} | ({"epochs"} if epochs_vary else set())


def experiment_summary(
    space: SearchSpace, max_epochs: int, epochs_vary: bool = False, precision: str = "float32",
) -> summary_pb2.Summary:
    """The HParams experiment as a `Summary` proto, each varying hyperparameter marked `differs`.

    TensorBoard lists hyperparameters that differ first and shows the first five as columns
    by default; without the mark it sorts by name, and `rank` fell behind five settings.

    Args:
        space: the sweep's search space.
        max_epochs: the most epochs a trial trains to.
        epochs_vary: whether trials train to different epochs.
        precision: the run's training precision.

    Returns:
        A `Summary` proto (`write_summary` writes it).

    Example: `experiment_summary(SearchSpace(), 2).SerializeToString()`.
    """
    summary = hparams_summary.hparams_config_pb(
        hparams=experiment_hparams(space, max_epochs, precision),
        metrics=[hparams_summary.Metric(tag, display_name=name, description=text) for tag, name, text in METRICS],
    )
    value = summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    varying = varying_hparams(space, epochs_vary)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in varying
    value.metadata.plugin_data.content = data.SerializeToString()
    return summary


def write_experiment(
    log_dir: str | pathlib.Path, space: SearchSpace, max_epochs: int, epochs_vary: bool = False,
    precision: str = "float32",
) -> None:
    """Declare the HParams experiment at the root of `log_dir` (once: a resumed run keeps it).

    Args:
        log_dir: the run's TensorBoard directory.
        space: the sweep's search space.
        max_epochs: the most epochs a trial trains to.
        epochs_vary: whether trials train to different epochs.
        precision: the run's training precision.

    Example: `write_experiment("logs/sweep/tensorboard", SearchSpace(), 2)`.
    """
    if any(pathlib.Path(log_dir).glob("events.out.tfevents*")):
        return
    pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
    write_summary(log_dir, experiment_summary(space, max_epochs, epochs_vary, precision))


def write_figures(log_dir: str | pathlib.Path, paths: dict) -> None:
    """The report's PNG plots as TensorBoard images (IMAGES tab) in `log_dir`, replacing earlier ones.

    The PNG files go in as they are, as `tf.summary.image` would encode them, without TensorFlow.

    Args:
        log_dir: a directory of its own under the run's TensorBoard directory.
        paths: `{name: PNG path}` (`write_reports`'s), none for no images.

    Example: `write_figures(run_dir / "tensorboard" / "report", {"loss_vs_rank": run_dir / "loss_vs_rank.png"})`.
    """
    shutil.rmtree(log_dir, ignore_errors=True)  # a resumed run replaces, not repeats, its images
    if not paths:
        return
    pathlib.Path(log_dir).mkdir(parents=True)
    summary = summary_pb2.Summary()
    for name, path in paths.items():
        png = pathlib.Path(path).read_bytes()
        width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR chunk
        # What `tf.summary.image` writes: [width, height, encoded image] as strings, with its metadata
        # (no display name, and not `converted_to_tensor`, which marks TF1's legacy image field).
        tensor = tensor_util.make_tensor_proto([str(width).encode(), str(height).encode(), png])
        summary.value.add(tag=name, tensor=tensor,
                          metadata=image_metadata.create_summary_metadata(display_name=None, description=""))
    write_summary(log_dir, summary)


def write_summary(logdir: str | pathlib.Path, summary: summary_pb2.Summary, step: int = 0) -> None:
    """Append a `Summary` at `step` to an event file of its own in `logdir` (TensorBoard's writer, no TensorFlow).

    Example: `write_summary("logs/sweep/tensorboard/trial_0", text_pb("notes", "hello"))`.
    """
    writer = EventFileWriter(str(logdir))
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    writer.close()


def start_session(session_dir: str | pathlib.Path, hparams: dict, trial_id: str) -> None:
    """Start a trial's HParams session in `session_dir`, dropping what a killed attempt left there.

    Example: `start_session("logs/sweep/tensorboard/trial_0", {"rank": 4, "batch_size": 8}, "trial_0")`.
    """
    session_dir = pathlib.Path(session_dir)
    shutil.rmtree(session_dir, ignore_errors=True)
    session_dir.mkdir(parents=True)
    write_summary(session_dir, hparams_summary.hparams_pb(hparams, trial_id=trial_id))


def end_session(session_dir: str | pathlib.Path, succeeded: bool) -> None:
    """End a trial's HParams session: TensorBoard shows its row as succeeded or failed.

    Example: `end_session("logs/sweep/tensorboard/trial_0", succeeded=True)`.
    """
    status = api_pb2.STATUS_SUCCESS if succeeded else api_pb2.STATUS_FAILURE
    info = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time()))
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(info),
                      tensor=metadata.NULL_TENSOR)
    write_summary(session_dir, summary)
