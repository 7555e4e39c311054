"""Texts to vectors: loading encoders offline, inference backends, the embedding cache."""
