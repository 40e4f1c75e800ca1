"""The commands, one module per family: each turns its options into a change of the state (or,
for read-only commands, into a report) and leaves the rest to the pipeline (pipeline.py).
Nothing here prints: results go back to the CLI."""
