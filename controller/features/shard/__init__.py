"""Ephemeral network shards (in progress: the rotation engine's decisions)."""
