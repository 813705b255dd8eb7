"""How much preference signal does the frozen backbone's last prompt state carry?

    python benchmarks/cllm4rec_linear_probe.py --pretrained_file=saved/CLLM4Rec-ml-100k-pretrained-<time>.pth
    python benchmarks/cllm4rec_linear_probe.py --pretrained_file=... --rows=text   # ID rows = mean text-token embeddings

Runs the ranking prompt ``user_u has interacted with <history>, user_u will interact with``
through the frozen backbone once per user (the tables from ``pretrained_file``), then fits the
best possible linear read-out of that state: a full-batch softmax regression with a per-item
bias onto each user's training items (no backbone in the loop, so hundreds of steps cost
seconds). Validation NDCG@10 of the read-out, next to popularity and the model's own tied head
on the same states, bounds what finetuning the output side alone can reach; what is missing
has to come from training the input tables through the backbone.
"""

import argparse

from recbole_cllm4rec.quick_start import parse_overrides


def ndcg_at_10(scores, seen, truth):
    """NDCG@10 by RecBole's own metric, training items and padding excluded as RecBole's
    full-sort evaluation excludes them; users with no validation item are left out."""
    from recbole.evaluator.metrics import NDCG

    scores = scores.clone()
    scores[seen > 0] = float("-inf")
    scores[:, 0] = float("-inf")
    users = truth.sum(1) > 0
    pos_index = truth.gather(1, scores.topk(10, dim=1).indices)[users].bool().cpu().numpy()
    pos_len = truth.sum(1)[users].long().cpu().numpy()
    per_user = NDCG({"topk": [10], "metric_decimal_place": 4}).metric_info(pos_index, pos_len)
    return float(per_user[:, 9].mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--pretrained_file", default=None, help="tables to probe (default: fresh random tables)")
    parser.add_argument(
        "--rows",
        choices=["tables", "text"],
        default="tables",
        help="text: every user/item row is the mean vocabulary embedding of its text",
    )
    parser.add_argument("--steps", type=int, default=300)
    args, rest = parser.parse_known_args()

    import torch
    import torch.nn.functional as F
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    import recbole_cllm4rec  # noqa: F401
    from recbole_cllm4rec.batching import length_batches
    from recbole_cllm4rec.data.text import entity_texts
    from recbole_cllm4rec.model.cllm4rec import CLLM4Rec
    from recbole_cllm4rec.quick_start import build_config

    config = build_config("CLLM4Rec", args.dataset, config_dict={"show_progress": False, **parse_overrides(rest)})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = CLLM4Rec(config, train._dataset)
    if args.pretrained_file:
        saved = torch.load(args.pretrained_file, map_location="cpu", weights_only=True)  # tables only: no pickle
        model.load_other_parameter(saved.get("other_parameter"))
        model.load_state_dict(saved["state_dict"])
        model.init_rec_from_collab()
    corpus = model.corpus
    if args.rows == "text":
        vocab = model.backbone.get_input_embeddings().weight
        with torch.no_grad():
            for spec in config["content_documents"] or []:
                if spec.get("source") in ("user", "item"):
                    table = model.user_rec if spec["source"] == "user" else model.item_rec
                    for row, text in enumerate(entity_texts(corpus.dataset, spec["source"], spec["text"])):
                        if text.strip():
                            table.weight[row] = vocab[torch.as_tensor(corpus._text_ids(text))].mean(0)

    n_users, n_items = model.n_users, model.n_items
    users = corpus.users_with_history()
    states = torch.zeros(n_users, model.backbone.config.hidden_size)
    histories = [corpus.eval_history(u, config["seed"]) for u in users]
    with torch.no_grad():
        for batch in length_batches(
            [len(h) for h in histories], model.llm_batch_size, max_tokens=model.max_batch_tokens
        ):
            states[users[batch]] = model.prompt_states(users[batch], [histories[i] for i in batch])
        seen = torch.zeros(n_users, n_items)
        for u in users:
            seen[u, torch.as_tensor(corpus.histories[u], dtype=torch.long)] = 1
        truth = torch.zeros(n_users, n_items)
        inter = valid._dataset.inter_feat
        truth[inter[config["USER_ID_FIELD"]], inter[config["ITEM_ID_FIELD"]]] = 1
        print(f"popularity           valid NDCG@10 {ndcg_at_10(seen.sum(0).expand(n_users, -1), seen, truth):.4f}")
        print(f"model's tied head    valid NDCG@10 {ndcg_at_10(model.item_logits(states, 'rec'), seen, truth):.4f}")
        cos = F.normalize(states[users], dim=1)
        print(f"mean cosine between users' states {float((cos @ cos.t()).mean()):.3f}")

    x = states[users]
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    weight = torch.zeros(x.shape[1], n_items, requires_grad=True)
    bias = torch.zeros(n_items, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for step in range(1, args.steps + 1):
        loss = -(F.log_softmax(x @ weight + bias, 1) * seen[users]).sum(1).mean() + 1e-4 * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            scores = torch.zeros(n_users, n_items)
            scores[users] = (x @ weight + bias).detach()
            print(
                f"linear read-out step {step:4d}: loss {loss.item():.1f}, valid NDCG@10 {ndcg_at_10(scores, seen, truth):.4f}"
            )


if __name__ == "__main__":
    main()
