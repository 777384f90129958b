"""Shared test settings. Each tier's heavy fixtures (the local control plane, the real node) live
in its own package's conftest.py, package-scoped, so each stops when its tier is done."""
