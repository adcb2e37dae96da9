"""Performance Insights: what each instance with PI on was waiting on and running, hour by hour."""
