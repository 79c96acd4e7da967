"""Analyses of an SAE on an activation store."""
