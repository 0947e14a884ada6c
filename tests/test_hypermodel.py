"""The hypermodel reuses one compiled model across trials of one LoRA config, with results as if built anew."""

import gc
import weakref

import keras_tuner
import numpy as np
import pytest

from lora_keras.runtime.benchmark import reference_base, reference_tokens
from lora_keras.runtime.graph_memory import custom_gradient_names
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


def test_reused_model_trains_exactly_like_a_fresh_one(base):
    tokens = reference_tokens(48, 6, 6, vocabulary_size=200)
    space = SearchSpace(ranks=(2, 4), batch_sizes=(8, 16), learning_rates=(1e-3, 3e-3), lora_dropouts=(0.2,))
    reusing = LoraT5HyperModel(base, space, epochs=2, seed=3)
    first, losses = _train(reusing, tokens, rank=2, batch_size=8, learning_rate=1e-3)
    other, other_losses = _train(reusing, tokens, rank=2, batch_size=16, learning_rate=3e-3)
    again, again_losses = _train(reusing, tokens, rank=2, batch_size=8, learning_rate=1e-3)
    assert other is first and again is first  # one model for the three trials
    assert other_losses != losses
    # The first trial ran on a freshly built model: the reset restores that state
    # exactly, dropout seeds and optimizer included.
    assert again_losses == losses
    assert np.isfinite(losses).all()
    hp = _hp(reusing, rank=2, batch_size=8, learning_rate=1e-3)
    assert reusing.trace(hp, again, tokens, tokens) == 0.0  # traced once, before the first trial's clock
    # After its trace the model is frozen out of garbage collections (lora_keras.runtime.heap):
    # a collection no longer walks it ...
    assert gc.get_freeze_count() > 1000
    assert not any(obj is first for obj in gc.get_objects())
    first_ref = weakref.ref(first)
    del first, other, again

    wider = reusing.build(_hp(reusing, rank=4, batch_size=8, learning_rate=1e-3))
    assert wider is not first_ref()  # another LoRA config needs another model
    assert wider.backbone.encoder_transformer_layers[0].self_attention.query_projector.lora_rank == 4
    # ... and dropping it for another config thaws it: it is freed, not leaked in the frozen generation.
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert first_ref() is None


def test_without_reuse_every_trial_builds(base):
    space = SearchSpace(ranks=(2,), batch_sizes=(8,), learning_rates=(1e-3,))
    hypermodel = LoraT5HyperModel(base, space, reuse_models=False)
    hp = _hp(hypermodel, rank=2, batch_size=8, learning_rate=1e-3)
    assert hypermodel.build(hp) is not hypermodel.build(hp)


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
    """TensorFlow's registry of custom gradients pins each traced train step (lora_keras.runtime.graph_memory)."""
    tokens = reference_tokens(16, 6, 6, vocabulary_size=200)
    hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(1, 2), batch_sizes=(8,)), epochs=1)
    registered, graphs_before = custom_gradient_names(), live_func_graphs()  # other tests' graphs may live
    graphs = []
    for rank in (1, 2):  # each rank needs a new model; the previous one is released
        _train(hypermodel, tokens, rank=rank, batch_size=8, learning_rate=1e-3)
        assert custom_gradient_names() - registered  # the live model's traced step registered some
        graphs.append(live_func_graphs())
    hypermodel.release()
    assert custom_gradient_names() == registered
    print(f"\nlive FuncGraphs before, with the model of rank 1, 2, after release: "
          f"{graphs_before}, {graphs}, {live_func_graphs()}")
    assert graphs[0] >= graphs_before + 3  # a traced model holds graphs (4 here: its steps traced once each) ...
    assert graphs[1] <= graphs[0] + 2  # ... one model's at a time, not one more set per model
    assert live_func_graphs() <= graphs_before + 2

