"""Turning a model's scores into lists: decoding constraints, re-ranking, filters."""
