"""cases: helpers for the course's case studies (vision now; NLP and reinforcement learning next).

What notebooks should not carry, in one importable place that learners can read:

* :mod:`cases.runtime`: thread limits, seeds, progress bars, runs over seeds, timing;
* :mod:`cases.data`: data sets shipped inside pip packages (scikit-learn's digits; a registry for the
  ``names`` lists and gymnasium environments of Modules 05 and 06);
* :mod:`cases.corruptions`: Gaussian noise, contrast, brightness and blur after ImageNet-C (NumPy/SciPy);
* :mod:`cases.models`: small CNNs, the reference residual block, residual stacks;
* :mod:`cases.train`: seeded SGD training, accuracy, prediction-time BN;
* :mod:`cases.bn`: folding BN for inference, adapting BN statistics to a new domain, freezing BN, drift;
* :mod:`cases.verify`: a learner's function is used by an experiment only after a quick check against the
  reference, otherwise the reference runs and one line says so;
* :mod:`cases.plots`: mean and range over seeds, with units; :mod:`cases.report`: results quoted by the
  module pages, generated from the notebooks.

Depends on torch, NumPy, SciPy, scikit-learn and bnlib; never on the autograder. bnlib stays the library
of normalization layers.
"""
from . import bn, corruptions, data, models, plots, runtime, train, verify   # report: python -m cases.report
from .runtime import limit_threads, over_seeds, progress, seed_all

__all__ = ["bn", "corruptions", "data", "models", "plots", "runtime", "train", "verify",
           "limit_threads", "over_seeds", "progress", "seed_all"]
