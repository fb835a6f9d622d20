"""Domain adaptation: each method is a set of loss terms (and modules) for the one engine."""
