"""The local dashboard: the fleet, an instance's metrics, the coverage the gap sensor sees and
the rightsizing evidence, as charts (Dash, served on loopback, read through the analysts'
sandboxed reader)."""
