"""Design matrices kept sparse: ELLPACK random-effects designs and LMM cross-products."""
