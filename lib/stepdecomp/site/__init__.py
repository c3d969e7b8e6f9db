"""The offline site of a report (``build``: FINDINGS, the appendix and one page per rendered
notebook, no external request) and its check in a real browser (``check``).

Imports: core, report.
"""
