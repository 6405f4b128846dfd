"""Auto-compression: per-layer sensitivity analysis and the tuner that searches a recipe's settings."""
