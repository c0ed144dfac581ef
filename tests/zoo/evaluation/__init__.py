"""Tests of zoo.evaluation (a package, so its test module names cannot clash with other folders' ones)."""
