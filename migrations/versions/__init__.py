"""corlens migrations/versions."""
