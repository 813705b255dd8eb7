"""Can the item text help warm items that have few training interactions? A ranking-time probe on
trained CLLM4Rec checkpoints (no retraining):

    python benchmarks/text_shrinkage_probe.py saved/CLLM4Rec-<run>.pth [more .pth] [--k 0,1,3,10,30]

Each item's recommendation row and bias are shrunk towards what its text predicts, more so the
fewer training interactions it has: ``row_j <- (n_j row_j + k m_j) / (n_j + k)``, where ``m_j`` is
the ridge map (text state -> row, bias) fitted on the items with training interactions and
``n_j`` the item's training count: the model's own ``cold_item_rows: text_map`` with
``text_prior_count: k``. k = 0 is the model as trained, except that items with no training
interaction take the map (on the sparse protocol that changed no metric: none of them reached a
top 10). The text state is read by the checkpoint's own backbone (pretrained or random weights), so
a random-weights checkpoint gets its own, uninformed map. Valid and test NDCG@10 per k, RecBole's
evaluator; choose k on valid only.
"""

import argparse

import recbole_cllm4rec  # noqa: F401  (before recbole.quick_start: its compat layer lets that import)


def dataset_yaml(name):
    """The package's current property file of the dataset (a checkpoint may predate a template)."""
    import yaml

    from recbole_cllm4rec.properties import property_file

    path = property_file("dataset", name)
    if path is None:
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def one_hot_fields(dataset, side, template):
    """[n_entities, sum of field sizes]: one-hot of each token field the text template names."""
    import string

    import torch
    from recbole.utils import FeatureType

    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    feat = dataset.user_feat if side == "user" else dataset.item_feat
    blocks = []
    for name in names:
        if name in feat.interaction and dataset.field2type[name] == FeatureType.TOKEN:
            blocks.append(torch.nn.functional.one_hot(feat[name].long(), dataset.num(name)).float())
    if not blocks:
        raise SystemExit(f"error: no token field of the {side}_text template {template!r} to one-hot")
    return torch.cat(blocks, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_files", nargs="+")
    parser.add_argument("--k", default="0,1,3,10,30")
    parser.add_argument(
        "--users", action="store_true", help="the users' text map (cold_user_states) instead of the items'"
    )
    parser.add_argument(
        "--features",
        choices=["text", "onehot"],
        default="text",
        help="onehot: replace the text state by a one-hot of the fields the text template names "
        "(the same facts, no language model): does the map need the LM, or only the categories?",
    )
    args = parser.parse_args()

    from recbole.quick_start import load_data_and_model

    from recbole_cllm4rec import coldstart
    from recbole_cllm4rec.registry import get_trainer

    grid = [float(k) for k in args.k.split(",")]
    print("| checkpoint | weights | text map | k | valid NDCG@10 | test NDCG@10 | test NDCG@10 by history length |")
    print("|---|---|---|---|---|---|---|")
    for path in args.model_files:
        config, model, _, train, valid, test = load_data_and_model(path)
        config.compatibility_settings()
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        states, prompt_states = {}, model.prompt_states

        def cached_states(users, visible, states=states, prompt_states=prompt_states):
            key = (tuple(int(u) for u in users), tuple(tuple(int(i) for i in v) for v in visible))
            if key not in states:
                states[key] = prompt_states(users, visible)
            return states[key]

        model.prompt_states = cached_states
        side = "user" if args.users else "item"
        if not len(getattr(model, f"{side}_text_states")):
            template = config[f"{side}_text"] or dataset_yaml(config["dataset"]).get(f"{side}_text")
            text = model._text_states(train._dataset, side, template, (f"--{side}s", f"add {side}_text"))
            setattr(model, f"{side}_text_states", text.to(model.device))
        if args.features == "onehot":
            template = config[f"{side}_text"] or dataset_yaml(config["dataset"]).get(f"{side}_text")
            onehot = one_hot_fields(train._dataset, side, template)
            setattr(model, f"{side}_text_states", onehot.to(model.device))
        if args.users:
            untrained = model.n_users - 1 - model.corpus.users_with_history().size
        else:
            untrained = int((~model.trained_items[1:]).sum())
        for k in grid:  # the model's own text prior (a text_map with (user_)text_prior_count: k)
            setattr(model, "cold_user_states" if args.users else "cold_item_rows", "text_map")
            setattr(model, "user_text_prior_count" if args.users else "text_prior_count", k)
            model._ranking_rows, model._user_map = None, None
            v = trainer.evaluate(valid, load_best_model=False)["ndcg@10"]
            t = trainer.evaluate(test, load_best_model=False)["ndcg@10"]
            buckets = coldstart.extra_results(config, trainer, train, test) if args.users else {}
            extra = " ".join(f"{c}: {x:.4f}" for table in buckets.values() for c, x in table.items())
            print(
                f"| {path.rsplit('/', 1)[-1]} | {config['llm_weights']}, seed {config['seed']} | {args.features} map "
                f"({untrained} {side}s without history) | {k:g} | {v:.4f} | {t:.4f} | {extra} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
