from recbole_cllm4rec.llm.backbone import (
    DEFAULT_LLM,
    TINY_LLM,
    BackboneError,
    load_causal_lm,
    package_folder,
    resolve_llm,
    text_start_ids,
)

__all__ = [
    "DEFAULT_LLM",
    "TINY_LLM",
    "BackboneError",
    "load_causal_lm",
    "package_folder",
    "resolve_llm",
    "text_start_ids",
]
