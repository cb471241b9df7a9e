"""The `wavstream` command line: one dispatcher, one module per command."""
