"""corlens gateway."""
