"""The physics of a batch, one formula per function: the seed study's FLOPs model (``seed``),
the physical model (``physical``: GEMM, attention, MoE, all-reduce and HBM bounds), phase
labels (``phases``), a step's prefill segments and their reconstruction from request journeys
(``segments``, ``reconstruct``) and BLIS's trained-physics basis (``blis_basis``).

Imports: core, hw, traces.
"""
