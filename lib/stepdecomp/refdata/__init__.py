"""Reference-data generator: the study's 16 experiments replayed through a vLLM-v1-style
scheduler along the engine's timeline (``python -m stepdecomp.refdata --out data/raw``).

Modules, in data-flow order: ``workload`` (what the load generator sent), ``stepcost``
(forward-pass time from hw.kernels' measured kernels; KV capacity), ``timeline`` (the CPU
cost model of schedule() and update_from_output()), ``prefixcache`` and ``scheduler`` (the
step loop), ``record`` and ``replay`` (what it produced), ``clientmetrics`` (inference-perf's
summaries), ``writer`` (OTLP traces, the truth sidecar), ``calibrate`` (hardware fit),
``cli``. Everything it writes is GENERATED data, labelled as such in data/README.md. The
analysis never imports it: only ``run`` starts it, and ``make data`` writes the files the
analysis reads like any user's traces.

Imports: core, hw, traces, model (the replay prices steps with the same formulas the analysis
uses, each in one place).
"""
