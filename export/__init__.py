"""Model export for deployment: ``python -m export.network`` writes the ONNX files the runtime engine loads (see
docs/engine.md). Needs torch; the runtime (``stream_fusion``) never imports this package."""
