"""Inference after a fit, as lme4 users know it: likelihood-ratio tests (``anova``),
Satterthwaite t-tests (lmerTest), profile-likelihood intervals and the parametric bootstrap
(``bootMer``)."""

from .bootstrap import BootstrapResult, bootstrap, simulate
from .lrt import RefitMLWarning, anova, compare_lr_test
from .profile import conf_int_method, profile_conf_int
from .satterthwaite import satterthwaite, satterthwaite_table

__all__ = ["BootstrapResult", "RefitMLWarning", "anova", "bootstrap", "compare_lr_test",
           "conf_int_method", "profile_conf_int", "satterthwaite", "satterthwaite_table",
           "simulate"]
