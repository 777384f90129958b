"""Sovereign AI Operator: the control plane (Kopf handlers, builders, policy, local cluster)."""
