"""Dataset conversion (raw review dumps -> RecBole atomic files) and the review side file."""

from recbole_cllm4rec.data.reviews import iter_reviews, read_reviews, review_path

__all__ = ["iter_reviews", "read_reviews", "review_path"]
