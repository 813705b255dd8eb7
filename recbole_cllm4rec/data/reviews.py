"""Read the ``<dataset>.review`` side file that :mod:`recbole_cllm4rec.data.convert` writes.

The file travels beside RecBole's atomic files (RecBole ignores the suffix). Each line is one
JSON object ``{"user_id": str, "item_id": str, "review": str}`` whose ids are the raw tokens of the
``.inter`` file, so ``dataset.token2id(dataset.uid_field, user_id)`` maps them to RecBole ids.
The file holds every converted interaction's text; callers that build training documents must
keep only training pairs themselves.
"""

import json
import os

REVIEW_SUFFIX = "review"
REVIEW_KEYS = ("user_id", "item_id", "review")


def review_path(data_path, dataset_name):
    """Path of the side file, or None when the dataset has none.

    ``data_path`` is the dataset folder, i.e. RecBole's ``config["data_path"]`` (which already ends
    with the dataset name); the parent folder (``data_path/<name>/``) is accepted too.
    """
    for folder in (data_path, os.path.join(data_path, dataset_name)):
        path = os.path.join(folder, f"{dataset_name}.{REVIEW_SUFFIX}")
        if os.path.isfile(path):
            return path
    return None


def iter_reviews(path):
    """Yield ``(user_token, item_token, text)`` from a side file, one line at a time.

    Raises ValueError naming the file and line when a line is not such an object.
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                row = tuple(obj[key] for key in REVIEW_KEYS)
                if not all(isinstance(value, str) for value in row):
                    raise TypeError("user_id, item_id and review must all be strings")
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}, line {lineno}: expected a JSON object with string fields "
                    f"{', '.join(REVIEW_KEYS)} ({type(exc).__name__}: {exc}). Regenerate the file with "
                    "`python -m recbole_cllm4rec.data.convert ... --overwrite`."
                ) from None
            yield row


def read_reviews(data_path, dataset_name):
    """All ``(user_token, item_token, text)`` triples of a dataset, or None if it has no side file."""
    path = review_path(data_path, dataset_name)
    return None if path is None else list(iter_reviews(path))
