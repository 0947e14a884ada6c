"""Bayesian optimisation: keras-tuner's Gaussian-process oracle over the declared space."""

import keras_tuner

from tuners.strategies import register

register("bayesian", keras_tuner.oracles.BayesianOptimizationOracle)
