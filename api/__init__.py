"""corlens api."""
