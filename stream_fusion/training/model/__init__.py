"""The DiffFuseNet fusion network (training side: needs torch; the runtime runs its ONNX export instead).

``build_model("lite" | "base" | preset_dict)``, ``save_checkpoint`` / ``load_checkpoint`` for self-describing
checkpoint files that carry their preset, so a checkpoint alone rebuilds its network.
"""
from stream_fusion.training.model.checkpoint import build_model, load_checkpoint, load_preset, save_checkpoint
from stream_fusion.training.model.net import DiffFuseNet

__all__ = ["DiffFuseNet", "build_model", "load_checkpoint", "load_preset", "save_checkpoint"]
