"""corlens indexer."""
