"""Cold-start protocols on RecBole's own Dataset and evaluator, selected from yaml.

* ``cold_item_ratio: r``: a share r of the items (drawn with ``seed``) loses every interaction
  from training and validation; the test set is exactly those items' interactions. With
  ``cold_item_max_history: k`` each of those items keeps a uniform 0..k of its interactions for
  training instead (rare items rather than unseen ones), and test holds the rest. Warm
  interactions are split per user into train/valid by the first two ``eval_args`` RS ratios.
  Test ranks over the cold items only (the main table) and over the whole catalogue (a second
  table). The items' rows in ``.item`` (their text) stay loaded.
* ``cold_user_ratio: r``: a share r of the users (drawn with ``seed``) keeps a uniform 0..
  ``cold_user_max_history`` of its interactions for training and has all the others in test
  (none in validation); the other users are split by ``eval_args`` as usual. Test ranks the whole
  catalogue; a second table gives the cold users' test metrics alone, a third NDCG@10 per bucket
  of training-history length.

The split replaces ``Dataset.build`` (the step that orders and splits), so ``data_preparation``,
the samplers and ``FullSortEvalDataLoader`` work unchanged. The one evaluator hook: a test
``Dataset`` may carry ``candidate_items`` (a bool mask over item ids); full-sort evaluation then
sets every other item's score to -inf, as RecBole already does for history items.
"""

import contextlib

import numpy as np
import torch

from recbole_cllm4rec.validation import InputError

BUCKETS = ((0, 0), (1, 2), (3, 5), (6, None))  # training-history lengths of the cold-user table
BUCKET_METRIC = "ndcg@10"


class ColdStartConfigError(InputError):
    pass


def protocol_of(config):
    """'item', 'user' or None, from the config's cold-start keys."""
    item, user = config["cold_item_ratio"] or 0, config["cold_user_ratio"] or 0
    if item and user:
        raise ColdStartConfigError(
            f"cold_item_ratio={item} and cold_user_ratio={user} are both set: a run measures one "
            f"cold-start protocol, set the other to 0"
        )
    if not (item or user):
        return None
    split = config["eval_args"]["split"] or {}
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        raise ColdStartConfigError(
            f"{config['model']} cannot run the cold-start protocols: they are built for general "
            f"(user-item) recommenders, and {config['model']} is a {config['MODEL_TYPE'].name.lower()} "
            f"model; drop cold_item_ratio/cold_user_ratio or pick a general model"
        )
    if "RS" not in split or config["eval_args"]["group_by"] != "user" or config["benchmark_filename"]:
        raise ColdStartConfigError(
            "the cold-start protocols split per user by ratio: use eval_args split {RS: [...]} with "
            "group_by: user and no benchmark_filename"
        )
    if user and config["cold_user_max_history"] is None:
        raise ColdStartConfigError(
            "cold_user_ratio is set but cold_user_max_history is not: set how many training "
            "interactions a cold user keeps at most, e.g. cold_user_max_history: 5"
        )
    return "item" if item else "user"


def describe(config):
    """The protocol line's cold-start part ('' for the ordinary split)."""
    kind = protocol_of(config)
    if kind == "item" and config["cold_item_max_history"]:
        return (
            f"; rare items: {config['cold_item_ratio']:.0%} of the items (seed {config['seed']}) keep 0-"
            f"{config['cold_item_max_history']} training interactions and none in valid, test = the rest "
            f"of their interactions, ranked among those items"
        )
    if kind == "item":
        return (
            f"; cold items: {config['cold_item_ratio']:.0%} of the items (seed {config['seed']}) have no "
            f"train/valid interaction, test = their interactions, ranked among the cold items"
        )
    if kind == "user":
        return (
            f"; cold users: {config['cold_user_ratio']:.0%} of the users (seed {config['seed']}) keep 0-"
            f"{config['cold_user_max_history']} training interactions, the rest in test; whole catalogue"
        )
    return ""


def _order(dataset):
    order = dataset.config["eval_args"]["order"]
    if order == "RO":
        dataset.shuffle()
    elif order == "TO":
        dataset.sort(by=dataset.time_field)
    else:
        raise ColdStartConfigError(f"eval_args order {order!r} must be RO or TO")


def _per_user_split(dataset, positions, ratios):
    """RecBole's grouped ratio split (its rounding) of the rows ``positions`` of inter_feat."""
    parts = [[] for _ in ratios]
    users = dataset.inter_feat[dataset.uid_field].numpy()[positions]
    for group in dataset._grouped_index(users):
        group = positions[group]
        bounds = [0] + dataset._calcu_split_ids(tot=len(group), ratios=[r / sum(ratios) for r in ratios]) + [len(group)]
        for part, start, end in zip(parts, bounds, bounds[1:]):
            part.extend(group[start:end])
    return [np.asarray(p, dtype=np.int64) for p in parts]


def draw_cold(dataset, kind, ratio, seed):
    """Sorted internal ids of a seeded share of the items (``kind='item'``) or users that have
    interactions: the cold ones."""
    field = dataset.iid_field if kind == "item" else dataset.uid_field
    ids = np.unique(dataset.inter_feat[field].numpy())
    n = int(round(ratio * len(ids)))
    if not 0 < n < len(ids):
        raise ColdStartConfigError(
            f"cold_{kind}_ratio={ratio} selects {n} of {len(ids)} {kind}s: pick a ratio "
            f"that leaves some {kind}s cold and some warm"
        )
    return np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))


def _keep_first(dataset, field, positions, cold, max_history, salt):
    """Split the rows ``positions`` (all of the ``cold`` ids' interactions) into (kept, rest): each
    id keeps a uniform 0..max_history of its rows, drawn once with the seed, the first in split
    order (random under RO, earliest under TO)."""
    rng = np.random.default_rng([dataset.config["seed"], salt])
    keep = dict(zip(cold.tolist(), rng.integers(0, max_history + 1, len(cold)).tolist()))
    ids = dataset.inter_feat[field].numpy()
    kept, rest = [], []
    for group in dataset._grouped_index(ids[positions]):
        group = positions[group]
        k = keep[int(ids[group[0]])]
        kept.extend(group[:k])
        rest.extend(group[k:])
    return np.asarray(kept, dtype=np.int64), np.asarray(rest, dtype=np.int64)


def split_cold_items(dataset):
    config = dataset.config
    cold = draw_cold(dataset, "item", config["cold_item_ratio"], config["seed"])
    is_cold = np.isin(dataset.inter_feat[dataset.iid_field].numpy(), cold)
    train_ratio, valid_ratio = config["eval_args"]["split"]["RS"][:2]
    train, valid = _per_user_split(dataset, np.flatnonzero(~is_cold), [train_ratio, valid_ratio])
    kept, test = _keep_first(
        dataset, dataset.iid_field, np.flatnonzero(is_cold), cold, config["cold_item_max_history"] or 0, 2
    )
    train = np.sort(np.concatenate([train, kept]))
    parts = [dataset.copy(dataset.inter_feat[index]) for index in (train, valid, test)]
    mask = torch.zeros(dataset.item_num, dtype=torch.bool)
    mask[torch.from_numpy(cold)] = True
    parts[2].candidate_items = mask
    return parts


def split_cold_users(dataset):
    config = dataset.config
    cold = draw_cold(dataset, "user", config["cold_user_ratio"], config["seed"])
    users = dataset.inter_feat[dataset.uid_field].numpy()
    is_cold = np.isin(users, cold)
    train, valid, test = _per_user_split(dataset, np.flatnonzero(~is_cold), config["eval_args"]["split"]["RS"])
    kept, rest = _keep_first(
        dataset, dataset.uid_field, np.flatnonzero(is_cold), cold, config["cold_user_max_history"], 1
    )
    train = np.sort(np.concatenate([train, kept]))
    test = np.sort(np.concatenate([test, rest]))
    parts = [dataset.copy(dataset.inter_feat[index]) for index in (train, valid, test)]
    parts[2].cold_users = cold
    return parts


def _build(original):
    def build(self):
        kind = protocol_of(self.config)
        if kind is None:
            return original(self)
        self._change_feat_format()
        _order(self)
        self._drop_unused_col()
        return split_cold_items(self) if kind == "item" else split_cold_users(self)

    build._cold_start = True
    return build


# ---- evaluation: the candidate mask, the whole-catalogue table, history buckets ----------------
def _patch_trainer():
    from recbole.trainer import trainer as module

    original_evaluate = module.Trainer.evaluate
    original_batch_eval = module.Trainer._full_sort_batch_eval

    def evaluate(self, eval_data, *args, **kwargs):
        self._candidate_items = getattr(getattr(eval_data, "_dataset", None), "candidate_items", None)
        try:
            return original_evaluate(self, eval_data, *args, **kwargs)
        finally:
            self._candidate_items = None

    def full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = original_batch_eval(self, batched_data)
        candidates = getattr(self, "_candidate_items", None)
        if candidates is not None:
            scores[:, ~candidates.to(scores.device)] = -np.inf
        return interaction, scores, positive_u, positive_i

    module.Trainer.evaluate = evaluate
    module.Trainer._full_sort_batch_eval = full_sort_batch_eval


@contextlib.contextmanager
def all_candidates(eval_data):
    """Evaluate ``eval_data`` over the whole catalogue for the duration."""
    dataset = eval_data._dataset
    saved = dataset.__dict__.pop("candidate_items", None)
    try:
        yield
    finally:
        if saved is not None:
            dataset.candidate_items = saved


def history_lengths(train_dataset):
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    return np.bincount(users, minlength=train_dataset.user_num)


def bucket_label(low, high):
    return f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")


def extra_results(config, trainer, train_data, test_data, show_progress=False):
    """``{table title: {column: value}}`` beyond the main test result (empty without a protocol)."""
    kind = protocol_of(config)
    if kind == "item":
        with all_candidates(test_data):
            result = trainer.evaluate(test_data, load_best_model=False, show_progress=show_progress)
        return {"test, cold items' interactions ranked against the whole catalogue": dict(result)}
    if kind != "user":
        return {}
    from recbole.data.dataloader import FullSortEvalDataLoader

    lengths = history_lengths(train_data._dataset)
    dataset = test_data._dataset
    test_users = dataset.inter_feat[dataset.uid_field].numpy()

    def evaluate(inside):
        part = FullSortEvalDataLoader(
            config, dataset.copy(dataset.inter_feat[np.flatnonzero(inside)]), test_data._sampler, shuffle=False
        )
        return trainer.evaluate(part, load_best_model=False, show_progress=show_progress)

    tables = {}
    cold_users = getattr(dataset, "cold_users", None)
    if cold_users is not None:  # the main table mixes them with the warm users' test split
        tables["test, the cold users only"] = dict(evaluate(np.isin(test_users, cold_users)))
    table = {}
    for low, high in BUCKETS:
        n = lengths[test_users]
        inside = (n >= low) & (n <= (high if high is not None else n.max()))
        label = bucket_label(low, high)
        users = len(np.unique(test_users[inside]))
        table[f"{label} ({users} users)"] = evaluate(inside)[BUCKET_METRIC] if users else float("nan")
    tables[f"test {BUCKET_METRIC.replace('ndcg', 'NDCG')} by training-history length"] = table
    return tables


def extra_tables(results):
    """Markdown lines: one table per extra result title, a row per finished model."""
    titles = []
    for r in results:
        titles += [t for t in r.get("extra_results", {}) if t not in titles]
    lines = []
    for title in titles:
        rows = [r for r in results if title in r.get("extra_results", {})]
        columns = list(rows[0]["extra_results"][title])
        lines += [
            f"{title[0].upper()}{title[1:]}:",
            "",
            "| model | " + " | ".join(columns) + " |",
            "|" + "---|" * (len(columns) + 1),
        ]
        for r in rows:
            values = r["extra_results"][title]
            lines.append(
                f"| {r['model']} | " + " | ".join(f"{values.get(c, float('nan')):.4f}" for c in columns) + " |"
            )
        lines.append("")
    return lines


def register():
    from recbole.data.dataset import Dataset

    if not getattr(Dataset.build, "_cold_start", False):
        Dataset.build = _build(Dataset.build)
        _patch_trainer()
