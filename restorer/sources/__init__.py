"""One module per target kind: read a target for backup, write it back on restore."""
