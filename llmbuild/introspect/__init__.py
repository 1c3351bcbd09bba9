"""Introspection of a workspace for the `llmbuild` command: BUILD.toml schema, target graph, ..."""
