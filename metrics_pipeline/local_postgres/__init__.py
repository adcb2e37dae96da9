"""A PostgreSQL server on loopback for the scale-out stack and its tests (PostgreSQL 16 from
the pgserver wheel: nothing to install from the system)."""
