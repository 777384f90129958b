"""The Validating step, pure: parse a spec, bind it to the SovereigntyPolicy that governs it and
enforce that policy (one module per kind), and resolve which model a ModelDeployment serves."""
