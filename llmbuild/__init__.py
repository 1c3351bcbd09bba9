"""llmbuild: declarative, incremental builds of LLM serving artifacts on doit."""

__version__ = "0.1.0"
