"""Target kinds. Each module is one kind (schema, key inputs, action) and registers itself."""
