"""Moved to :mod:`facegnet.evaluation.metrics`; this name stays for existing imports."""
from facegnet.evaluation.metrics import *  # noqa: F401,F403
from facegnet.evaluation.metrics import __all__  # noqa: F401
