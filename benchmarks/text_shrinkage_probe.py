"""Can the item text help warm items that have few training interactions? A ranking-time probe on
trained CLLM4Rec checkpoints (no retraining):

    python benchmarks/text_shrinkage_probe.py saved/CLLM4Rec-<run>.pth [more .pth] [--k 0,1,3,10,30]

Each item's recommendation row and bias are shrunk towards what its text predicts, more so the
fewer training interactions it has: ``row_j <- (n_j row_j + k m_j) / (n_j + k)``, where ``m_j`` is
the ridge map (text state -> row, bias) fitted on the items with training interactions (as
``cold_item_rows: text_map`` fits it) and ``n_j`` the item's training count. k = 0 is the model as
trained. Items with no training interaction keep their trained rows (``trained``) or take the
mapped ones (``text_map``, as ``cold_item_rows: text_map`` does). The text state is read by the checkpoint's own backbone (pretrained or random weights), so
a random-weights checkpoint gets its own, uninformed map. Valid and test NDCG@10 per k, RecBole's
evaluator; choose k on valid only.
"""

import argparse

import recbole_cllm4rec  # noqa: F401  (before recbole.quick_start: its compat layer lets that import)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_files", nargs="+")
    parser.add_argument("--k", default="0,1,3,10,30")
    args = parser.parse_args()

    import torch
    from recbole.quick_start import load_data_and_model

    from recbole_cllm4rec.model import cold_items
    from recbole_cllm4rec.registry import get_trainer

    grid = [float(k) for k in args.k.split(",")]
    print("| checkpoint | weights | items without training interactions | k | valid NDCG@10 | test NDCG@10 |")
    print("|---|---|---|---|---|---|")
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
        text = model._item_text_states(train._dataset, config["item_text"]).to(model.device)
        rows = model.item_rows("rec").detach().clone()
        bias = model.item_bias["rec"].detach().clone()
        warm = model.trained_items.clone()
        target = torch.cat([rows[warm], bias[warm, None]], 1)
        (weights, intercept), _ = cold_items.fit_map(text[warm].cpu(), target.cpu(), model.seed)
        mapped = (text.cpu().double() @ weights + intercept).float().to(rows.device)
        counts = torch.as_tensor(model._item_counts(), dtype=torch.float32, device=rows.device)
        untrained = ~warm
        untrained[0] = False
        for cold in ("trained", "text_map"):
            for k in grid:
                keep = (counts / (counts + k)) if k else torch.ones_like(counts)
                keep = keep.where(warm, torch.ones_like(counts) if cold == "trained" else torch.zeros_like(counts))
                keep[0] = 1.0
                keep = keep[:, None]
                shrunk = (
                    keep * rows + (1 - keep) * mapped[:, :-1],
                    keep[:, 0] * bias + (1 - keep[:, 0]) * mapped[:, -1],
                )
                cold_items.ranking_rows = lambda _model, shrunk=shrunk: shrunk
                v = trainer.evaluate(valid, load_best_model=False)["ndcg@10"]
                t = trainer.evaluate(test, load_best_model=False)["ndcg@10"]
                print(
                    f"| {path.rsplit('/', 1)[-1]} | {config['llm_weights']}, seed {config['seed']} | {cold} ({int(untrained.sum())} items) "
                    f"| {k:g} | {v:.4f} | {t:.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
