"""corlens migrations."""
