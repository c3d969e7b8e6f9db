"""What the batch runs on, as data: the model specs read from Hugging Face configs and the GPU
specs read from ``data/hardware/*.json`` (``specs``), and the measured vLLM kernel tables of
aiconfigurator-core (``kernels``: GEMM, attention, MoE and all-reduce latencies per shape).
Adding a GPU or a model is adding a data file (docs/recipes/).

Imports: core.
"""
