"""Evaluation: how good a fusion is, on registered test pairs (no torch).

``metrics`` holds the fusion and colour-fidelity metrics (the MMIF-CDDFuse evaluator's definitions), ``score`` the
command that scores a folder of fused images against their sources (``python -m stream_fusion.evaluate``).
"""
