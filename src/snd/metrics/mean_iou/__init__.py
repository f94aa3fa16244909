"""Local `evaluate` module; see the sibling file of the same name."""
