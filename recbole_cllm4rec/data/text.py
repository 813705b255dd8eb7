"""Text of users and items as RecBole loaded it from the ``.user`` / ``.item`` atomic files."""

import string

import numpy as np
from recbole.utils import FeatureType


class TextFieldError(ValueError):
    """A template names a field the dataset did not load."""


def template_fields(template):
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _field_strings(dataset, field, values):
    """Strings of one field for every row; RecBole's padding and NaNs become ''."""
    ftype = dataset.field2type[field]
    values = values.numpy()
    if ftype == FeatureType.TOKEN:
        tokens = dataset.id2token(field, values)
        return ["" if v == 0 else str(t) for v, t in zip(values, tokens)]
    if ftype == FeatureType.TOKEN_SEQ:
        vocab = np.asarray(dataset.field2id_token[field])
        return [" ".join(vocab[row[row > 0]]) for row in values]
    if ftype == FeatureType.FLOAT:
        return ["" if np.isnan(v) else (str(int(v)) if float(v).is_integer() else f"{v:g}") for v in values]
    return [" ".join(f"{x:g}" for x in row) for row in values]  # FLOAT_SEQ


def entity_texts(dataset, source, template):
    """Render ``template`` for every user (``source='user'``) or item of ``dataset``.

    Returns a list indexed by RecBole's internal id (index 0, the padding id, is ''). Rows
    whose fields are all empty render as '' so callers can drop them.
    """
    feat = dataset.user_feat if source == "user" else dataset.item_feat
    names = template_fields(template)
    loaded = set(feat.columns) if feat is not None else set()
    missing = [f for f in names if f not in loaded]
    if missing:
        raise TextFieldError(
            f"template '{template}' uses {missing}, which the .{source} file of dataset "
            f"'{dataset.dataset_name}' does not provide; add them to load_col: {source}: [...] in "
            f"the dataset's yaml, or change the template (loaded fields: {sorted(loaded)})"
        )
    n_rows = dataset.user_num if source == "user" else dataset.item_num
    columns = {f: _field_strings(dataset, f, feat[f]) for f in names}
    texts = [""]
    for row in range(1, n_rows):
        values = {f: columns[f][row] for f in names}
        texts.append(template.format(**values) if any(values.values()) else "")
    return texts
