"""The statsmodels-style model classes: validate, dispatch, name."""
