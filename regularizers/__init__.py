"""Flat-minima regularizers behind one contract, found by name.

>>> import regularizers
>>> sam = regularizers.create("sam", perturbation_radius=0.1)
>>> sorted(regularizers.available())[:2]
['amp', 'asam']

``regularizers.space`` is the module of search-space domains (``Float``, ``Int``, ``Choice``,
``hparam``); :func:`hyperparameters_of` lists what a registered method declares.

Depends on torch (and bench.errors, standard library only): importable without Ray, Optuna or MLflow.
"""

from regularizers import space  # the module, never shadowed by a function of the same name
from regularizers.base import (
    BatchClosure,
    Objective,
    PassCost,
    PassOutput,
    Regularizer,
    StepReport,
    StepSchedule,
    WeightBackup,
    batchnorm_modules,
    global_norm,
    gradients,
    perturbed_weights,
    rescale_,
    trainable_parameters,
    zero_grads,
)
from regularizers.registry import (
    ENTRY_POINT_GROUP,
    RegistryError,
    available,
    builtin,
    create,
    get,
    hyperparameters_of,
    is_known,
    load_entry_points,
    register,
    unregister,
)
from regularizers.space import Choice, Float, HyperParameter, Int, hparam, hyperparameters

# Importing the built-in methods registers them (the decorator runs at class definition). The order they
# register in (sam and asam first: amp imports them) fixes each method's colour and marker in every figure
# (registry.builtin, bench/report/palette.py): import a new method's module last.
from regularizers import amp, coherent, erm, gnp, l1, nrs, nso, rwp, sam, weight_decay  # noqa: E402,F401  isort: skip
from regularizers import gsam, looksam, gam, msam  # noqa: E402,F401  isort: skip
from regularizers import esam, vasso, fisher_sam, fsam  # noqa: E402,F401  isort: skip
from regularizers import saf  # noqa: E402,F401  isort: skip

__all__ = [
    "BatchClosure",
    "Choice",
    "ENTRY_POINT_GROUP",
    "Float",
    "HyperParameter",
    "Int",
    "Objective",
    "PassCost",
    "PassOutput",
    "RegistryError",
    "Regularizer",
    "StepReport",
    "StepSchedule",
    "WeightBackup",
    "available",
    "batchnorm_modules",
    "builtin",
    "create",
    "get",
    "global_norm",
    "gradients",
    "hparam",
    "hyperparameters",
    "hyperparameters_of",
    "is_known",
    "load_entry_points",
    "perturbed_weights",
    "register",
    "rescale_",
    "space",
    "trainable_parameters",
    "unregister",
    "zero_grads",
]
