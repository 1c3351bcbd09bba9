"""Introspection of a workspace: the BUILD.toml JSON Schema and the target graph."""
