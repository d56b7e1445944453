"""Data layer: signal operations, source readers, the prepared store and torch datasets."""
