"""The samplers a study can use, all Optuna's own, all seeded from the study and aware of its constraint.

- ``tpe``: multivariate TPE (Bergstra et al., NeurIPS 2011; Falkner et al., ICML 2018
  for the multivariate kernel), with constraints as c-TPE (Watanabe & Hutter, IJCAI 2023).
- ``gp``: Gaussian-process Bayesian optimization with a constrained expected improvement
  (Gardner et al., ICML 2014).
- ``cmaes``: CMA-ES (Hansen, 2016); it ignores the constraint, so it suits loose budgets.
- ``random``: independent uniform sampling, the control (Bergstra & Bengio, JMLR 2012).
- ``nsga2``: NSGA-II with constrained domination (Deb et al., IEEE TEC 2002), for
  multi-objective studies.
"""

from __future__ import annotations

import warnings

import optuna

from ..settings import SAMPLERS

__all__ = ["SAMPLERS", "make_sampler"]


def make_sampler(name: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """Sampler ``name`` seeded with ``seed``, sampling at random for its first ``startup_trials`` trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=startup_trials)
        if name == "gp":
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=startup_trials, warn_independent_sampling=False
            )
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed, n_startup_trials=startup_trials, warn_independent_sampling=False
            )
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(10, startup_trials))
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")
