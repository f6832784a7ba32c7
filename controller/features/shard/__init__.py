"""Ephemeral network shards (in progress: the rotation engine's decisions and the RAP
message format; see docs/rap.md and docs/notes.md)."""
