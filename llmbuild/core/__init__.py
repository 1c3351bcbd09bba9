"""The kind-agnostic core: workspace, addresses, graph, keys, cache."""
