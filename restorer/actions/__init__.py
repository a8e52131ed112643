"""Orchestration: each action takes a loaded plan and options, does the work, returns a result."""
