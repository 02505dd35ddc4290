"""Linear algebra shared by the fits."""
