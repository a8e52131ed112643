"""The Click command line."""
