"""llmbuild's own model.py sources for the Triton repository (copied into <model>/1/model.py; never imported)."""
