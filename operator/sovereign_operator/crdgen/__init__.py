"""Generates crds/ from the API models: CustomResourceDefinitions and admission policies."""
