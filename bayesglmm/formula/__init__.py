"""Formulas and data frames → designs: one front end for both model kinds."""
