"""keras-tuner's own tuners on the hypermodel: plain string pairs (or TokenizedPairs), `validation_data=`,
`epochs=`, the best model back from keras-tuner's checkpoint, and input no trial can train on stopping
`search` at once."""

import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

from lora_keras.adapters import lora_layers
from lora_keras.data.pipeline import tokenize_pairs
from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.models.sources import load_preset
from tests.conftest import ROOT, TINY_PREFIX
from tuners import LoraT5HyperModel, SearchInputError, SearchSpace

TRAIN = demo_corpus.generate_pairs("Dravic", 16, seed=1)
VAL = demo_corpus.generate_pairs("Dravic", 8, seed=1, split="val")


@pytest.fixture(scope="module")
def hypermodel(tiny_preset):
    """One hypermodel for every tuner here: its model is built and traced once (ranks share it)."""
    base = load_preset(tiny_preset, task={"source_lang": "English", "target_lang": "Dravic"})
    return LoraT5HyperModel(base, ranks=[1, 2, 4], batch_sizes=[8], learning_rates=[3e-3], seed=0)


def _best_loss_reloaded(tuner, hypermodel):
    """The best model keras-tuner reloads from its checkpoint, scored again on VAL: its val loss."""
    model = tuner.get_best_models()[0]
    nll, tokens = hypermodel.pair_losses(model, hypermodel.tokenize(VAL, "validation_data"))
    return float(nll[0].sum() / tokens.sum())


def test_the_keyword_constructor_builds_the_search_space_and_the_prefix_from_the_base(hypermodel):
    assert hypermodel.space == SearchSpace(ranks=(1, 2, 4), batch_sizes=(8,), learning_rates=(3e-3,), seeds=(0,))
    assert hypermodel.prefix == TINY_PREFIX
    expected = tokenize_pairs(hypermodel.base.tokenizer, TRAIN, TINY_PREFIX)
    tokens = hypermodel.tokenize([list(pair) for pair in TRAIN])  # lists as pairs too
    assert (tokens.source_ids == expected.source_ids).all() and (tokens.target_ids == expected.target_ids).all()
    assert hypermodel.tokenize(TRAIN) is hypermodel.tokenize(list(TRAIN))  # tokenized once per search
    spaced = LoraT5HyperModel(hypermodel.base, target_sets=["q,v", ("q", "k", "v", "o")], prefix="")
    assert spaced.space.target_sets == (("q", "v"), ("q", "k", "v", "o")) and spaced.prefix == ""
    with pytest.raises(ValueError, match="pass the space or its values, not both"):
        LoraT5HyperModel(hypermodel.base, SearchSpace(), ranks=[4])
    for space in (None, SearchSpace()):
        with pytest.raises(ValueError, match="rank: not an argument"):
            LoraT5HyperModel(hypermodel.base, space, rank=[4])
    with pytest.raises(ValueError, match="ranks: 4; pass a non-empty list"):
        LoraT5HyperModel(hypermodel.base, ranks=4)
    with pytest.raises(ValueError, match="LoRA rank 512 is wider than layer"):  # not a failed build per trial
        LoraT5HyperModel(hypermodel.base, ranks=[4, 512])


@pytest.mark.parametrize("make_tuner", [
    lambda hm, d: keras_tuner.RandomSearch(hm, "val_loss", max_trials=2, seed=1, directory=d),
    lambda hm, d: keras_tuner.GridSearch(hm, "val_loss", max_trials=2, directory=d),
    lambda hm, d: keras_tuner.BayesianOptimization(hm, "val_loss", max_trials=2, num_initial_points=1, seed=1,
                                                   directory=d),
], ids=["random", "grid", "bayesian"])
def test_a_stock_tuner_searches_string_pairs_and_returns_the_best_model_at_its_val_loss(
        hypermodel, make_tuner, tmp_path):
    tuner = make_tuner(hypermodel, str(tmp_path))
    tuner.search(TRAIN, validation_data=VAL, epochs=1, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert len({t.hyperparameters.get("rank") for t in trials}) == 2
    # epochs=1 from search: one epoch per trial (the hypermodel's own default is 2).
    assert all(len(t.metrics.get_history("val_loss")) == 1 for t in trials)
    best = tuner.oracle.get_best_trials(1)[0]
    assert tuner.get_best_hyperparameters()[0].values == best.hyperparameters.values
    # The model keras-tuner reloads holds the best trial's trained adapter: its val loss is the trial's score.
    assert _best_loss_reloaded(tuner, hypermodel) == pytest.approx(best.score, rel=1e-4)
    b = [keras.ops.convert_to_numpy(layer.lora_b)[0] for layer in lora_layers(tuner.get_best_models()[0].backbone)
         .values()]
    assert all(weights.any() for weights in b)  # trained: B starts at zero


def test_hyperband_continues_a_trial_from_keras_tuner_s_checkpoint_of_its_parent(hypermodel, tmp_path, monkeypatch):
    continued = []
    fit_group = LoraT5HyperModel.fit_group

    def recording(self, hps, model, *args, parents=None, **kwargs):
        if "tuner/trial_id" in hps[0].values:
            continued.append(parents[0][1])  # the adapter slot 0 starts from
        return fit_group(self, hps, model, *args, parents=parents, **kwargs)

    monkeypatch.setattr(LoraT5HyperModel, "fit_group", recording)
    tuner = keras_tuner.Hyperband(hypermodel, "val_loss", max_epochs=2, factor=2, seed=1, directory=str(tmp_path))
    tokens = hypermodel.tokenize(TRAIN), hypermodel.tokenize(VAL)
    tuner.search(tokens[0], validation_data=tokens[1], verbose=0)  # TokenizedPairs as well as strings
    trials = list(tuner.oracle.trials.values())
    assert trials and all(t.status == "COMPLETED" for t in trials)
    assert continued and all(all(w.any() for name, w in weights.items() if name.endswith("lora_b"))
                             for weights in continued)  # the parent's trained B, not a fresh (zero) one
    assert {t.hyperparameters.get("tuner/epochs") for t in trials} == {1, 2}
    best = tuner.oracle.get_best_trials(1)[0]
    assert _best_loss_reloaded(tuner, hypermodel) == pytest.approx(best.score, rel=1e-4)


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros((4, 8)),), {"validation_data": VAL}, r"^x: a numpy.ndarray; pass a list of \(source, target\)"),
    (([],), {"validation_data": VAL}, r"^x: an empty list; pass at least one"),
    ((TRAIN,), {}, r"^validation_data: no validation pairs .*; call search\(train_pairs, validation_data=val_pairs\)"),
    ((TRAIN,), {"validation_data": [("a", 1)]}, r"^validation_data: item 0 is \('a', 1\), not a \(source, target\)"),
    ((TRAIN,), {"validation_data": VAL, "batch_size": 8}, r"^batch_size: set by each trial, not search"),
    ((), {}, r"^x: no training pairs; call search"),
], ids=["array", "empty", "no-validation", "not-strings", "batch-size", "nothing"])
def test_input_no_trial_can_train_on_stops_the_search_at_once(hypermodel, tmp_path, args, kwargs, message):
    tuner = keras_tuner.RandomSearch(hypermodel, "val_loss", max_trials=2, directory=str(tmp_path))
    with pytest.raises(keras_tuner.errors.FatalError, match=message) as raised:
        tuner.search(*args, epochs=1, verbose=0, **kwargs)
    assert isinstance(raised.value, SearchInputError) and "\n" not in str(raised.value)
    # The first trial stopped before training: nothing finished, nothing scored.
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 1 and trials[0].status == "RUNNING" and not trials[0].metrics.metrics


def test_the_package_s_names_load_their_modules_on_first_use():
    """`from tuners import LoraT5HyperModel` works, yet `import tuners.cluster` alone loads no TensorFlow."""
    code = ("import sys, tuners, tuners.cluster; assert 'tensorflow' not in sys.modules, 'tensorflow loaded'; "
            "assert 'LoraT5HyperModel' in dir(tuners); from tuners import LoraT5HyperModel; "
            "assert 'tensorflow' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
