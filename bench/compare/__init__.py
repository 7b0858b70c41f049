"""Helpers of bench/compare.py (this project vs Prefect 3.9.1, side by side)."""
