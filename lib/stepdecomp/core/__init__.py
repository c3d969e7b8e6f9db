"""The ground every other subpackage stands on: where things are (``paths``), the notebooks'
parameters and their defaults (``params``), the names of the shared table columns
(``columns``), bounded user-facing messages (``messages``) and the run directory with the
tables the notebooks hand each other (``artefacts``). Nothing here knows about traces,
models or statistics.

Imports: nothing else in stepdecomp.
"""
