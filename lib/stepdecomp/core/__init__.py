"""The ground every other subpackage stands on: where things are (``paths``), the notebooks'
parameters and their defaults (``params``), the names of the shared table columns
(``columns``), bounded user-facing messages (``messages``) and the run directory with the
tables the notebooks hand each other (``artefacts``); what the statistics and the report
share about those tables: the tables' names, writers and column values (``tables``), the
thresholds the statistics apply and FINDINGS states (``thresholds``) and the verdict as a
value with its table format (``verdicts``). Nothing here reads traces or computes a
formula or a statistic.

Imports: nothing else in stepdecomp.
"""
