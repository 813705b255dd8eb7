"""Padding and length-bucketed batching of token-id sequences, for the corpora (data/), the text
encoder (llm/), the model and the trainer alike: it imports nothing of this package."""

import numpy as np


def pad_batch(sequences, pad_id):
    """Right-pad id arrays into ``(ids [B, L], attention_mask [B, L])`` numpy arrays."""
    length = max(len(s) for s in sequences)
    ids = np.full((len(sequences), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def length_batches(lengths, batch_size, rng=None, max_tokens=None):
    """Batches of indices with similar lengths (less padding), in random order when ``rng``.

    Shuffles, sorts within windows of 50 batches, cuts batches of at most ``batch_size``
    documents and (if given) ``max_tokens`` padded tokens, then shuffles the batches.
    """
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-np.asarray(lengths)[chunk], kind="stable")]
        batch, longest = [], 0
        for index in chunk:
            longest_if_added = max(longest, lengths[index])
            if batch and (
                len(batch) >= batch_size or (max_tokens and longest_if_added * (len(batch) + 1) > max_tokens)
            ):
                batches.append(batch)
                batch, longest_if_added = [], lengths[index]
            batch.append(index)
            longest = longest_if_added
        if batch:
            batches.append(batch)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
