"""Kubernetes I/O: API clients, CRD installation and (later) watches and the idempotent sink."""
