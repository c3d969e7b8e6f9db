"""Analytical decomposition of vLLM scheduler-step durations."""
