"""Thin Ray job entry points: `python -m jobs.X` locally, or `ray job submit --working-dir . -- python -m jobs.X`."""
