"""Lifecycle state machines that walk a feature through a sequence of desired states."""
