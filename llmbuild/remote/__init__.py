"""The remote cache: an action cache on an S3-compatible store, shared between machines."""
