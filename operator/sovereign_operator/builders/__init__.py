"""Pure manifest builders: (validated spec, owner, config) -> dict. No client calls, no env."""
