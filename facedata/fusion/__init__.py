"""Landmark schemes and the index maps that fuse corpora annotated with different schemes."""
