"""The public API of the operator: typed models of every custom resource, by version."""
