"""The notebooks' figures, drawn from tables: the study's and the physical mode's plots
(``plots``) and the step-time model's (``stepmodel``). Figures compute nothing a table does
not already hold, beyond what drawing needs (bins, sorting).

Imports: core, hw, traces, model, targets, stats, stepmodel.
"""
