"""What starts things: the per-experiment pipeline, in process or on Dask (``pipeline``), the
notebook runner behind ``make report`` (``notebooks``), and the commands that start the
reference-data replay to check something against it: the replay's targets against its truth
(``validate``), the step-time model replayed against the published runs
(``stepmodel_client``), the sensitivity draws (``sensitivity``), and notebook 07's tables and
export (``stepmodel_tables``). The only layer besides refdata itself that imports refdata.

Imports: every subpackage.
"""
