"""Evaluation: a model's predictions against the classical estimators, the oracle and the Cramér–Rao bound on the
same test set, with metrics and plots (docs/EVALUATION.md)."""
