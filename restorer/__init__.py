"""restorer: backup-and-restore orchestration."""

__version__ = "0.1.0"
