"""The curator: sequential reasoning traces -> Multiverse data through an OpenAI-compatible LLM."""
from data_pipeline.api import curate, structure_stats
from data_pipeline.config import ConfigError, CurateConfig, load_config

__all__ = ["ConfigError", "CurateConfig", "curate", "load_config", "structure_stats"]
