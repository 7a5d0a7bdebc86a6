"""Evaluation in one place: metrics, benchmarks in LFW's layout, and verification of many pairs from a CSV.

- :mod:`~facegnet.evaluation.metrics`: ROC, AUC, TAR at a FAR, best threshold, k-fold accuracy, P/R/F1
  from pair similarities (no model needed);
- :mod:`~facegnet.evaluation.lfw`: read a ``pairs.txt`` protocol, run the full pipeline on it, plot the ROC
  (``facegnet eval lfw``);
- :mod:`~facegnet.evaluation.pairs`: verify the pairs of a user's CSV file (``facegnet verify --pairs``).
"""
