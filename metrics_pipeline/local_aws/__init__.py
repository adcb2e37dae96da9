"""A local AWS for development and tests: moto, extended where it differs from AWS."""
