"""Models: the preprocessing transformer and the candidate classifiers."""
