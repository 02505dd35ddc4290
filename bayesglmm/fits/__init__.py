"""Fit drivers: one module per fit, each returning a Solution-bearing record."""
