"""CLLM4Rec's rows for items with no training interaction (``cold_item_rows``), and the
read-out of users with few or none (``cold_user_states``).

Such an item is never a target, so its recommendation row and bias are only ever pushed down
as a negative. At ranking time its row can instead come from the content side:

* ``content``: its content row as is, with the warm items' mean bias (the two tables share a
  space only where mutual regularisation ties them, i.e. use_content with mr_weight > 0);
* ``content_map``: a ridge regression from ``[content row]`` to ``[rec row, bias]``, fitted on
  the warm items after training and applied to the cold ones; the ridge strength is chosen on a
  seeded fifth of the warm items held out from the fit;
* ``text_map``: the same ridge map, from the item's text state (what the frozen LM makes of
  its ``item_text``, as ``item_text_rows`` reads it) instead of its content row: no content
  LM needed, and the only path by which the LM's pretrained knowledge reaches a cold item.
  With ``text_prior_count: k > 0`` every item's row and bias become ``(n row + k map) / (n + k)``,
  n its training interactions: the text map acts as a prior worth k interactions, so an item
  seen a few times leans on its text and a popular one keeps its trained row (n = 0: the map).

``cold_user_states: text_map`` does the same for users: a ridge map from the user's text state
(``user_text``, e.g. age, gender and occupation, read by the frozen LM) to the read-out of their
recommendation prompt, fitted on the users with a training history; a user's read-out becomes
``(n state + k map) / (n + k)`` (k = ``user_text_prior_count``; with k = 0, users with no training
interaction take the map, whose prompt otherwise reads out zeros and ranks by the bias alone).

The score is still the LM's prompt state dotted with the row (plus the bias).
``content_init: text`` starts every item's content row at the mean input embedding of its text's
tokens (divided by id_input_scale, which the model multiplies back on input), so the content
row carries the text from the first step.
"""

import numpy as np
import torch

from recbole_cllm4rec.data.text import entity_texts

RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # times the mean squared feature


def text_rows(model, dataset, template):
    """[n_items, hidden] mean token embedding of each item's text (zeros where it has none)."""
    if not template:
        raise ValueError(
            f"content_init: text needs item texts, but dataset '{dataset.dataset_name}' has no "
            f"item_text template: set item_text in its yaml, or use content_init: random"
        )
    embedding = model.backbone.get_input_embeddings().weight.detach()
    rows = torch.zeros(model.n_items, embedding.shape[1])
    for item, text in enumerate(entity_texts(dataset, "item", template)):
        ids = model.corpus._text_ids(text) if text.strip() else []
        if len(ids):
            rows[item] = embedding[torch.as_tensor(ids)].float().mean(0) / model.id_input_scale
    return rows


def own_weight(counts, prior_count):
    """Weight of an entity's own row (or read-out) against its text map, by its training count n:
    n / (n + k) with a prior worth k interactions; with k = 0, 1 where n > 0 and 0 where n = 0."""
    return counts / (counts + prior_count) if prior_count > 0 else (counts > 0).to(counts.dtype)


def _ridge(x, y, strength):
    """Centred ridge: ``(weights, intercept)`` of y ~ x."""
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    gram = xc.T @ xc + strength * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weights = torch.linalg.solve(gram, xc.T @ (y - my))
    return weights, my - mx @ weights


def fit_map(x, y, seed):
    """Ridge map x -> y with the strength that predicts a held-out fifth of the rows best."""
    x, y = x.double(), y.double()
    scale = x.pow(2).mean().item()
    order = np.random.default_rng(seed).permutation(len(x))
    held, fit = order[: len(x) // 5], order[len(x) // 5 :]
    errors = []
    for factor in RIDGE_GRID:
        w, b = _ridge(x[fit], y[fit], factor * scale)
        errors.append((x[held] @ w + b - y[held]).pow(2).mean().item())
    best = RIDGE_GRID[int(np.argmin(errors))]
    return _ridge(x, y, best * scale), best


@torch.no_grad()
def ranking_rows(model):
    """``(item rows, item bias or None)`` to rank with, or None when the trained ones are used."""
    if model.cold_item_rows == "trained":
        return None
    warm = model.trained_items.cpu().numpy().copy()
    cold = ~warm
    cold[0] = False
    shrink = model.cold_item_rows == "text_map" and model.text_prior_count > 0
    if not warm.any() or not (cold.any() or shrink):
        return None
    rows = model.item_rows("rec").detach().clone()
    bias = model.item_bias["rec"].detach().clone() if "rec" in model.item_bias else None
    source = model.item_text_states if model.cold_item_rows == "text_map" else model.item_content.weight.detach()
    warm_t, cold_t = torch.from_numpy(warm).to(rows.device), torch.from_numpy(cold).to(rows.device)
    if model.cold_item_rows == "content":
        rows[cold_t] = source[cold_t]
        if bias is not None:
            bias[cold_t] = bias[warm_t].mean()
        return rows, bias
    target = rows[warm_t] if bias is None else torch.cat([rows[warm_t], bias[warm_t, None]], 1)
    (weights, intercept), _ = fit_map(source[warm_t].cpu(), target.cpu(), model.seed)
    predicted = (source.cpu().double() @ weights + intercept).to(rows.dtype).to(rows.device)
    counts = torch.as_tensor(model._item_counts(), dtype=rows.dtype, device=rows.device)
    keep = own_weight(counts, model.text_prior_count if shrink else 0)
    keep[0] = 1.0  # the padding item
    rows = keep[:, None] * rows + (1 - keep[:, None]) * predicted[:, : rows.shape[1]]
    if bias is not None:
        bias = keep * bias + (1 - keep) * predicted[:, -1]
    return rows, bias


@torch.no_grad()
def fit_user_map(model, chunk=256):
    """``(weights, intercept)``: ridge map from the user text state to the prompt read-out (one
    history order each), fitted on the users with training interactions."""
    lengths = np.array([len(h) for h in model.corpus.histories])
    warm = np.flatnonzero(lengths > 0)
    warm = warm[warm > 0]  # RecBole's padding user 0
    states = torch.cat([model.ranking_states(warm[i : i + chunk], 1).cpu() for i in range(0, len(warm), chunk)])
    (weights, intercept), _ = fit_map(model.user_text_states[warm], states, model.seed)
    return weights, intercept


def user_ranking_states(model, users, states, user_map):
    """``states`` [B, H] of ``users`` mixed with their text map by training-history length n."""
    weights, intercept = user_map
    mapped = (model.user_text_states[users].double() @ weights + intercept).to(states)
    n = torch.as_tensor([len(model.corpus.histories[u]) for u in users], dtype=states.dtype, device=states.device)
    keep = own_weight(n, model.user_text_prior_count)
    return keep[:, None] * states + (1 - keep[:, None]) * mapped
