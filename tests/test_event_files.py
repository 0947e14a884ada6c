"""Every kind of TensorBoard file the project writes, written on JAX with TensorFlow blocked, read back by TensorBoard."""

import io
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.util import tensor_util

from conftest import ROOT
from tuners.hparams import HPARAM_DESCRIPTIONS, METRICS

NOTES = "| source | reference |\n|---|---|\n| Hallo | hello |"

# What a trial writes, in the trial runner's order: its session, scalars from two epochs, a text, the session's end.
WRITE = """
import json, pathlib, sys
from tensorboard.plugins.text import summary_v2 as text_summary
from callbacks import create_writer
from callbacks._summary import flush, write_scalars
from tuners.hparams import end_session, start_session, write_experiment, write_figures, write_summary
from tuners.search_space import SearchSpace

logdir, png, notes = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
write_experiment(logdir, SearchSpace(ranks=(1, 4), batch_sizes=(8,)), max_epochs=2)
session = logdir / "trial_0"
start_session(session, {"rank": 4, "batch_size": 8, "precision": "float32"}, "trial_0")
writer = create_writer(str(session))
write_scalars(writer, {"val_loss": 1.5, "bleu": None, "trainable_params": 1536}, step=0)
write_scalars(writer, {"val_loss": 1.25}, step=1)
flush(writer)
writer.close()
write_summary(session, text_summary.text_pb("sample_translations", notes), step=1)
end_session(session, succeeded=True)
write_figures(logdir / "report", {"line": png})
print(json.dumps({"tensorflow": "tensorflow" in sys.modules}))
"""


def accumulate(path):
    accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def hparams_data(accumulator, tag):
    return plugin_data_pb2.HParamsPluginData.FromString(accumulator.PluginTagToContent("hparams")[tag])


def values(accumulator, tag):
    return [(event.step, tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]


def test_event_files_written_without_tensorflow_read_back(tmp_path):
    png = tmp_path / "line.png"
    figure = Figure(figsize=(2, 1.5), dpi=50)
    FigureCanvasAgg(figure)
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])
    figure.savefig(png)
    logdir = tmp_path / "tensorboard"
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_tensorflow"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", WRITE, str(logdir), str(png), NOTES], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"tensorflow": False}

    experiment = hparams_data(accumulate(logdir), "_hparams_/experiment").experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == set(HPARAM_DESCRIPTIONS)
    assert [value.number_value for value in infos["rank"].domain_discrete.values] == [1, 4]
    assert {name for name, info in infos.items() if info.differs} == {"rank", "lora_alpha"}
    assert [metric.name.tag for metric in experiment.metric_infos] == [tag for tag, _, _ in METRICS]

    session = accumulate(logdir / "trial_0")
    start = hparams_data(session, "_hparams_/session_start_info").session_start_info
    assert {name: value.number_value for name, value in start.hparams.items() if name != "precision"} == {
        "rank": 4, "batch_size": 8}
    assert start.hparams["precision"].string_value == "float32"
    assert hparams_data(session, "_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_SUCCESS
    # Scalars as `tf.summary.scalar` writes them: float32 tensors of the scalars plugin, None left out.
    assert [(step, value.dtype, value.item()) for step, value in values(session, "val_loss")] == [
        (0, np.float32, 1.5), (1, np.float32, 1.25)]
    assert [(step, value.item()) for step, value in values(session, "trainable_params")] == [(0, 1536)]
    assert "bleu" not in session.Tags()["tensors"]
    assert session.PluginTagToContent("scalars").keys() == {"val_loss", "trainable_params"}
    [(step, text)] = values(session, "sample_translations")
    assert step == 1 and text.item().decode() == NOTES

    report = accumulate(logdir / "report")
    assert set(report.PluginTagToContent("images")) == {"line"}
    [(step, image)] = values(report, "line")
    width, height, encoded = image.tolist()
    original = matplotlib.image.imread(png)
    assert step == 0 and (int(width), int(height)) == (original.shape[1], original.shape[0])
    assert encoded == png.read_bytes()  # the file as it is, not re-encoded
    assert np.array_equal(matplotlib.image.imread(io.BytesIO(encoded), format="png"), original)
