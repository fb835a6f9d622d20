"""Pure loss functions on tensors; the methods in :mod:`transferkit.adapt.methods` combine them."""

from transferkit.adapt.losses.adversarial import (
    RandomizedMultilinearMap as RandomizedMultilinearMap,
)
from transferkit.adapt.losses.adversarial import domain_accuracy as domain_accuracy
from transferkit.adapt.losses.adversarial import domain_bce as domain_bce
from transferkit.adapt.losses.adversarial import entropy_weights as entropy_weights
from transferkit.adapt.losses.adversarial import grad_reverse as grad_reverse
from transferkit.adapt.losses.adversarial import mdd_loss as mdd_loss
from transferkit.adapt.losses.adversarial import multilinear_map as multilinear_map
from transferkit.adapt.losses.coral import coral_loss as coral_loss
from transferkit.adapt.losses.entropy import afn_loss as afn_loss
from transferkit.adapt.losses.entropy import bnm_loss as bnm_loss
from transferkit.adapt.losses.entropy import entropy_loss as entropy_loss
from transferkit.adapt.losses.entropy import mcc_loss as mcc_loss
from transferkit.adapt.losses.mmd import jmmd2_unbiased as jmmd2_unbiased
from transferkit.adapt.losses.mmd import mmd2_linear as mmd2_linear
from transferkit.adapt.losses.mmd import mmd2_unbiased as mmd2_unbiased

__all__ = [
    "RandomizedMultilinearMap",
    "afn_loss",
    "bnm_loss",
    "coral_loss",
    "domain_accuracy",
    "domain_bce",
    "entropy_loss",
    "entropy_weights",
    "grad_reverse",
    "jmmd2_unbiased",
    "mcc_loss",
    "mdd_loss",
    "mmd2_linear",
    "mmd2_unbiased",
    "multilinear_map",
]
