"""Tuning strategies: registered plugins that propose trials (basic, sensitivity, optuna, annealing)."""
