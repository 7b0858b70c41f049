"""Pools on the broker: queue naming and publishing due runs."""
