"""Random search: keras-tuner's own oracle, each trial a random untried combination."""

import keras_tuner

from tuners.strategies import register

register("random", keras_tuner.oracles.RandomSearchOracle)
