"""Data I/O, splits, losses, metrics, logging and plots."""
