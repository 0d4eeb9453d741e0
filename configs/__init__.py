"""Dataclass configurations, presets and dataset facts (no side effects at import)."""
