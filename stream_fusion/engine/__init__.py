"""The fusion stage (being split into a package: see the next commit)."""
from stream_fusion.engine.onnx_engine import (  # noqa: F401
    DEFAULT_MODEL, DEFAULT_RESOLUTION, PROVIDERS, REQUIRED_METADATA, SHIPPED_MODELS, ClassicalEngine, FusionEngine,
    OnnxEngine, check_pair, create_engine, default_cache_dir, file_digest, frame_dims, frame_graph, fuse_colour,
    fuse_luma, is_colour_model, merge_luma, model_metadata, open_session, pad_to_multiple, provider_options,
    read_model, session_options, split_luma, to_gray, usable_cores,
)
