"""Training: configuration, the Lightning task and data module, checkpoints, and the run orchestration."""
