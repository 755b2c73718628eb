"""Paper step 3: per-frame depth of the retrieved clip (estimator backends, normalisation, the shot_depth memo)."""
