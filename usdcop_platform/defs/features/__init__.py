"""Features domain: the m5_features asset and its quality gates."""
