"""Reconcile core: pure planning from desired and observed state (no I/O)."""
