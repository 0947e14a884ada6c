"""The hypermodel: keras-tuner's build and fit, and one compiled model reused by every rank of one targets,
dropout and init, with results as if built anew."""

import gc
import weakref

import keras
import keras_tuner
import numpy as np
import pytest

from lora_keras.adapters import lora_layers
from lora_keras.errors import InputError
from lora_keras.runtime.benchmark import reference_base, reference_tokens
from lora_keras.backends.memory import custom_gradient_names
from tuners.hypermodel import LoraT5HyperModel
from tuners.search_space import SearchSpace

SMALL = dict(vocabulary_size=200, num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
             key_value_dim=16, dropout=0.1)


@pytest.fixture(scope="module")
def base():
    return reference_base(0, **SMALL)


def _hp(hypermodel, **values):
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    for name, value in values.items():
        hp.values[name] = value
    return hp


def _train(hypermodel, tokens, **values):
    hp = _hp(hypermodel, **values)
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, tokens, tokens, verbose=0)
    return model, history.history["loss"] + history.history["val_loss"]


def rank_of(model, slot=0):
    """The rank slot `slot` of `model`'s adapters holds (every adapted layer holds the same)."""
    ranks = {layer.configs[slot].rank for layer in lora_layers(model.backbone).values()}
    assert len(ranks) == 1
    return ranks.pop()


def test_ranks_share_one_model_and_a_repeated_trial_trains_exactly_like_its_first_run(base):
    tokens = reference_tokens(48, 6, 6, vocabulary_size=200)
    space = SearchSpace(ranks=(2, 4), batch_sizes=(8, 16), learning_rates=(1e-3, 3e-3), lora_dropouts=(0.2, 0.0),
                        target_sets=(("q", "v"), ("q",)))
    reusing = LoraT5HyperModel(base, space, epochs=2, seed=3)
    first, losses = _train(reusing, tokens, rank=2, batch_size=8, learning_rate=1e-3)
    assert rank_of(first) == 2
    # Rank 2 in adapters padded to the space's largest rank: the padding stays zero, untouched by training.
    for layer in lora_layers(first.backbone).values():
        assert layer.max_rank == 4 and layer.dropout == 0.2
        a, b = (keras.ops.convert_to_numpy(v)[0] for v in (layer.lora_a, layer.lora_b))
        assert a[:, :2].any() and b[:2].any() and not a[:, 2:].any() and not b[2:].any()
    other, other_losses = _train(reusing, tokens, rank=4, batch_size=16, learning_rate=3e-3)
    assert other is first and rank_of(other) == 4  # another rank, batch size and learning rate: the same model
    again, again_losses = _train(reusing, tokens, rank=2, batch_size=8, learning_rate=1e-3)
    assert again is first and rank_of(again) == 2
    assert other_losses != losses
    # The first trial ran on a freshly built model: the reset after a trial of another rank restores
    # that state exactly, adapter, dropout seeds and optimizer included.
    assert again_losses == losses
    assert np.isfinite(losses).all()
    assert reusing.trace(again, tokens, tokens) == 0.0  # traced once, before the first trial's clock
    # After its trace the model is frozen out of garbage collections (lora_keras.runtime.heap):
    # a collection no longer walks it ...
    assert gc.get_freeze_count() > 1000
    assert not any(obj is first for obj in gc.get_objects())
    first_ref = weakref.ref(first)
    del first, other, again

    undropped = reusing.build(_hp(reusing, rank=4, batch_size=8, learning_rate=1e-3, lora_dropout=0.0))
    assert undropped is not first_ref()  # another dropout needs another model
    assert rank_of(undropped) == 4 and {layer.dropout for layer in lora_layers(undropped.backbone).values()} == {0.0}
    # ... and dropping it for another config thaws it: it is freed, not leaked in the frozen generation.
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert first_ref() is None
    assert reusing.build(_hp(reusing, rank=2, batch_size=16, learning_rate=3e-3, lora_dropout=0.0)) is undropped
    q_only = reusing.build(_hp(reusing, rank=2, batch_size=8, learning_rate=1e-3, lora_dropout=0.0, targets="q"))
    assert q_only is not undropped  # other targets: another model too
    assert lora_layers(q_only.backbone) and all(path.endswith("/q") for path in lora_layers(q_only.backbone))
    assert reusing._kept.model is q_only


def test_without_reuse_every_trial_builds(base):
    space = SearchSpace(ranks=(2,), batch_sizes=(8,), learning_rates=(1e-3,))
    hypermodel = LoraT5HyperModel(base, space, reuse_models=False)
    hp = _hp(hypermodel, rank=2, batch_size=8, learning_rate=1e-3)
    assert hypermodel.build(hp) is not hypermodel.build(hp)


def test_keras_tuner_s_contract_build_returns_a_compiled_model_and_fit_trains_it(base, tmp_path):
    tokens = reference_tokens(16, 6, 6, vocabulary_size=200)
    space = SearchSpace(ranks=(2, 4), batch_sizes=(8, 16), learning_rates=(1e-3,))
    hypermodel = LoraT5HyperModel(base, space, epochs=1, slots=2)
    hp = keras_tuner.HyperParameters()  # empty, as keras-tuner hands a trial's first: build declares the space
    model = hypermodel.build(hp)
    assert {p.name for p in hp.space} >= {"rank", "batch_size", "learning_rate"}
    assert isinstance(model, keras.Model) and model.compiled and model.optimizer is not None
    assert rank_of(model) == hp.get("rank") == 2
    b_before = [keras.ops.convert_to_numpy(layer.lora_b)[0] for layer in lora_layers(model.backbone).values()]
    assert not any(b.any() for b in b_before)  # built at the trial's initial adapter: B zero
    history = hypermodel.fit(hp, model, tokens, tokens, verbose=0)
    assert isinstance(history, keras.callbacks.History)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["val_loss"]).all()
    assert all(keras.ops.convert_to_numpy(layer.lora_b)[0].any() for layer in lora_layers(model.backbone).values())
    # Trials trained together share one batch size (and learning rate, epochs): else an InputError.
    hp8, hp16 = _hp(hypermodel, rank=2, batch_size=8), _hp(hypermodel, rank=4, batch_size=16)
    with pytest.raises(InputError, match="one batch size"):
        hypermodel.fit_group([hp8, hp16], model, tokens, tokens, verbose=0)
    # keras-tuner's own Tuner drives it: build and fit per trial, the objective read from fit's History.
    tuner = keras_tuner.GridSearch(hypermodel, objective="val_loss", max_trials=2, directory=str(tmp_path),
                                   project_name="contract")
    tuner.search(tokens, tokens, verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert all(np.isfinite(t.metrics.get_last_value("val_loss")) for t in trials)


def live_func_graphs():
    """FuncGraphs alive, frozen ones too (a traced model is frozen out of collections until released)."""
    from tensorflow.python.framework.func_graph import FuncGraph

    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()  # gc.get_objects() leaves out frozen objects
    gc.collect()
    count = sum(isinstance(obj, FuncGraph) for obj in gc.get_objects())
    if frozen:
        gc.freeze()
    return count


@pytest.mark.e2e  # 26 s of training two models: in CI's second tier
def test_a_released_model_leaves_no_training_graph_behind(base):
    """TensorFlow's registry of custom gradients pins each traced train step (lora_keras.backends.memory)."""
    tokens = reference_tokens(16, 6, 6, vocabulary_size=200)
    hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(1, 2), batch_sizes=(8,), lora_dropouts=(0.0, 0.1)),
                                  epochs=1)
    registered, graphs_before = custom_gradient_names(), live_func_graphs()  # other tests' graphs may live
    graphs = []
    for dropout in (0.0, 0.1):  # each dropout needs a new model (ranks share one); the previous one is released
        _train(hypermodel, tokens, rank=1, batch_size=8, learning_rate=1e-3, lora_dropout=dropout)
        assert custom_gradient_names() - registered  # the live model's traced step registered some
        graphs.append(live_func_graphs())
    hypermodel.release()
    assert custom_gradient_names() == registered
    print(f"\nlive FuncGraphs before, with the model of dropout 0, 0.1, after release: "
          f"{graphs_before}, {graphs}, {live_func_graphs()}")
    assert graphs[0] >= graphs_before + 3  # a traced model holds graphs (4 here: its steps traced once each) ...
    assert graphs[1] <= graphs[0] + 2  # ... one model's at a time, not one more set per model
    assert live_func_graphs() <= graphs_before + 2

