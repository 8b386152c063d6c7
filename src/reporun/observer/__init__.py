"""Elasticity: a pure policy decides how many workers; scalers make it so."""
