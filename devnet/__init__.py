"""corlens devnet."""
