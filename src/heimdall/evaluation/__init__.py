"""Evaluation: a model's predictions against the classical estimators, the oracle and the Cramér–Rao bound on the
same test set, with metrics and plots (docs/EVALUATION.md)."""

DEFAULT_GRID_SPACING_M = 2_000.0  # grid of the classical estimators' search
