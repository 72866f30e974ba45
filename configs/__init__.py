"""The configuration files (``*.yaml``), installed inside the package as ``stream_fusion.configs``: pyproject.toml maps
that package onto this folder, so a wheel install finds its defaults (``stream_fusion.config.CONFIG_DIR``)."""
