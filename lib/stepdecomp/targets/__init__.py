"""What a step's time is measured as: the step targets read from the trace timestamps
(``timestamps``, through ``stamps``), the engine loop that decides what those intervals span
(``engineloop``, docs/measurement.md §5), the load generator's client metrics
(``clientmetrics``) and the check of the targets against a replay's truth (``truthcheck``).

Imports: core, hw, traces, model.
"""
