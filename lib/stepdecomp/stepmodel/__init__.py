"""The step-time model: BLIS's basis fitted to the forward time with cluster-bootstrap
intervals (``fit``), the held-out evaluation of it beside BLIS's shipped vector, the roofline
and gradient boosting (``evaluate``), and the export in the format BLIS loads (``export``).

Imports: core, hw, traces, model, targets, stats.
"""
