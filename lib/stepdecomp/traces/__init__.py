"""From the files users bring to tables: the OTLP trace format (``otlp``), its line decoders
(``otlp_rows``, ``otlp_columns``), reading and caching trace files (``tracefile``,
``tracecache``), experiment directories and their configs (``experiments``) and the dataset
loader with its parse report (``load``). Bad input is skipped, counted and named here.

Imports: core, hw.
"""
