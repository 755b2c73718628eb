"""Generator backends that load third-party weights (``generate.load_generator`` picks one)."""
