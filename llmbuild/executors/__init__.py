"""Executors run one argv: on this host (local) or in a container (docker)."""
