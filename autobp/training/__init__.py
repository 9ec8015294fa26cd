"""The training loop and what it owns: optimizers, metrics, gradient statistics, progress, resumable state."""
