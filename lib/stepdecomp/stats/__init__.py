"""How much of a step's time the physics explains: correlations and the seed's verdicts
(``correlation``), bootstrap intervals and block lengths (``resample``), the non-negative
attribution of time to components (``attribution``), what explains the targets beyond the
physics (``explain``), running a statistic on every target (``per_target``), the MoE
check of the efficiency curve (``moecheck``) and the medians and totals over experiments that
FINDINGS quotes of the per-experiment tables (``summary``). Every estimator is N/A with a reason below its
minimum sample.

Imports: core, hw, traces, model, targets.
"""
