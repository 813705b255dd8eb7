"""How far RecBole 1.2.1's Pop is from item popularity, and what that does to its scores.

    python benchmarks/pop_count.py [--dataset ml-100k] [--output results/pop-count-ml-100k.md] [key=value ...]

RecBole's ``Pop.calculate_loss`` adds 1 to ``item_cnt[item]`` for the items of a training batch with
an indexed assignment, so an item that appears several times in one batch counts once
(RUCAIBox/RecBole#2198, the cause of #1844's batch-size dependence), and its pointwise dataloader
puts the sampled negative items into the same ``item_id`` column, so each negative counts as an
interaction. This trains RecBole's Pop as every
comparison here does (same config, seed, split and evaluator), then ranks again with the exact
number of training interactions per item, and writes both rows.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_cllm4rec.quick_start import parse_overrides  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--output", default=None, help="default: results/pop-count-<dataset>.md")
    args, rest = parser.parse_known_args()

    import numpy as np
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import Pop
    from recbole.utils import get_trainer, init_seed
    from scipy.stats import spearmanr

    import recbole_cllm4rec  # noqa: F401  (RecBole's compatibility settings)
    from recbole_cllm4rec.quick_start import build_config

    overrides = {"show_progress": False, "state": "WARNING", **parse_overrides(rest)}
    config = build_config("Pop", args.dataset, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = Pop(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=False, show_progress=False)

    def scores():
        return {
            "valid": trainer.evaluate(valid, load_best_model=False, show_progress=False),
            "test": trainer.evaluate(test, load_best_model=False, show_progress=False),
        }

    counted = model.item_cnt[:, 0].clone()
    as_run = scores()
    items = train._dataset.inter_feat[train._dataset.iid_field].numpy()
    exact = torch.as_tensor(np.bincount(items, minlength=model.n_items), dtype=torch.long)
    model.item_cnt = exact[:, None].to(model.item_cnt.device)
    model.max_cnt = model.item_cnt.max(dim=0)[0]
    exact_scores = scores()

    real = slice(1, None)  # id 0 is padding
    rho = spearmanr(counted[real].numpy(), exact[real].numpy()).statistic
    top = 10
    top_counted = set(torch.topk(counted[real], top).indices.tolist())
    top_exact = set(torch.topk(exact[real], top).indices.tolist())
    ratio = counted[real].sum().item() / exact[real].sum().item()
    batches = len(train)
    capped = int((exact[real] > batches).sum())
    findings = [
        f"Training interactions: {int(exact[real].sum())}; RecBole's Pop counted {int(counted[real].sum())} "
        f"({ratio:.2f}x: negatives included, repeats within a batch once); Spearman rank correlation "
        f"with the exact counts {rho:.4f}; {len(top_counted & top_exact)} of the {top} most counted "
        f"items are among the {top} most popular. The training data came in {batches} batches, so no "
        f"item's positives could count more than {batches} times: {capped} items have more training "
        f"interactions than that, and among them the order is set by how often each was drawn as a "
        f"negative.",
    ]
    rows = {"Pop (RecBole 1.2.1 as run)": as_run, "Pop, exact training counts": exact_scores}
    metrics = ["recall@10", "ndcg@10", "mrr@10", "hit@10"]
    table = ["| Pop | " + " | ".join(f"{p} {m}" for p in ("test", "valid") for m in metrics) + " |"]
    table.append("|---" * (1 + 2 * len(metrics)) + "|")
    for name, result in rows.items():
        cells = [f"{result[p][m]:.4f}" for p in ("test", "valid") for m in metrics]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    command = "python benchmarks/pop_count.py" + (f" --dataset {args.dataset}" if args.dataset != "ml-100k" else "")
    command += "".join(f" {r}" for r in rest)
    text = "\n".join(
        [
            f"# RecBole's Pop against exact item popularity ({args.dataset})",
            "",
            __doc__.split("\n\n", 2)[2].strip(),
            "",
            "    " + command,
            "",
            f"Seed {config['seed']}, split {config['eval_args']['split']}, train_batch_size "
            f"{config['train_batch_size']}, {trainer.epochs} training epoch(s) (RecBole's trainer for {model.type.name.lower()} models), full ranking.",
            "",
            *table,
            "",
            *findings,
            "",
        ]
    )
    output = args.output or os.path.join("results", f"pop-count-{args.dataset}.md")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    tmp = f"{output}.{os.getpid()}.tmp"  # a kill never leaves half a file
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, output)
    print(text)


if __name__ == "__main__":
    main()
