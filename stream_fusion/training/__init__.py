"""Training: everything that needs torch, and nothing a deployment box runs.

``model/`` holds the networks (DiffFuseNet, the colour Dif-CDFusion) and their checkpoints, ``losses`` the
unsupervised losses, ``data`` the training pairs, ``train`` the two-stage training command
(``python -m stream_fusion.training.train``). The runtime (``stream_fusion`` outside this folder) never imports it:
it runs the exported ONNX files.
"""
