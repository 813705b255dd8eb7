"""Item text vectors for the language-vector models (AlphaRec, TextKNN): the dataset's
``item_text`` template rendered per item (data layer) and embedded by a cached encoder (llm layer)."""

import torch

from recbole_cllm4rec.data.text import entity_texts
from recbole_cllm4rec.llm.text_encoder import TextEncoder


def item_text_vectors(config, dataset, model_name, hint=""):
    """``(vectors [n_items, dim] with a zero padding row 0, encoder)``: the dataset's
    ``item_text`` template rendered per item and embedded by ``config["text_encoder"]`` (cached)."""
    template = config["item_text"]
    if not template:
        raise ValueError(
            f"{model_name} needs item texts, but dataset '{dataset.dataset_name}' has no "
            f"`item_text` template: set item_text in its yaml, e.g. "
            f'item_text: "{{title}}" (fields in braces are .item columns listed under '
            f"load_col: item){hint}"
        )
    if not isinstance(template, str):  # yaml reads an unquoted {title} as a mapping
        raise ValueError(f'item_text must be a string, got {template!r}: quote it in yaml, item_text: "{{title}}"')
    texts = entity_texts(dataset, "item", template)
    encoder = TextEncoder(
        config["text_encoder"],
        pooling=config["text_pooling"],
        max_length=config["text_max_length"],
        batch_size=config["text_batch_size"],
        cache_dir=config["embedding_cache_dir"],
        device=config["device"],
        show_progress=config["show_progress"],
    )
    z = encoder.encode(texts[1:])  # index 0 is padding
    encoder.release()  # the vectors are all training needs; a later encode reloads the model
    return torch.cat([z.new_zeros(1, z.shape[1]), z]), encoder
