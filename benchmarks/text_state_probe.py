"""What does each layer of the frozen backbone know about an item from its text alone, and how
much of that is pretrained knowledge rather than token identity?

    python benchmarks/text_state_probe.py [--layers 0,2,4,8,16,30] [key=value overrides]

For each layer (0: the input embeddings) and for the pretrained backbone and its randomly
initialised twin, every item's text (the dataset's ``item_text``: title, year, genres on ml-100k)
is read once and its states averaged over the text's tokens, standardised over items. Two read-outs
of that item vector, no training of the backbone:
* ``knn``: a user is the mean vector of their training items; items ranked by cosine (TextKNN);
* ``map``: a ridge regression from the item vector to the item's column of the training matrix
  (user x item, scaled per user), fitted on every item: the best linear use of the text as a
  per-user item score, the way CLLM4Rec's text map reads it.
Valid NDCG@10 on the default protocol (RecBole's split and metric; training items excluded).
A random twin that matches the pretrained one says the text helps through its tokens, not
through what the language model learned.
"""

import argparse

from recbole_cllm4rec.quick_start import parse_overrides


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--layers", default="0,2,4,8,16,30")
    parser.add_argument("--ridge", type=float, default=100.0)
    args, rest = parser.parse_known_args()

    import numpy as np
    import torch
    import torch.nn.functional as F
    from cllm4rec_linear_probe import ndcg_at_10
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    import recbole_cllm4rec  # noqa: F401
    from recbole_cllm4rec.batching import length_batches, pad_batch
    from recbole_cllm4rec.data.text import entity_texts
    from recbole_cllm4rec.llm.backbone import load_causal_lm, randomly_initialised, text_start_ids
    from recbole_cllm4rec.quick_start import build_config

    config = build_config("CLLM4Rec", args.dataset, config_dict={"show_progress": False, **parse_overrides(rest)})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    dataset = train._dataset
    n_users, n_items = dataset.user_num, dataset.item_num
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    seen = torch.zeros(n_users, n_items)
    seen[dataset.inter_feat[uid], dataset.inter_feat[iid]] = 1
    truth = torch.zeros(n_users, n_items)
    truth[valid._dataset.inter_feat[uid], valid._dataset.inter_feat[iid]] = 1
    layers = [int(x) for x in args.layers.split(",")]

    pretrained, tokenizer = load_causal_lm(config["llm_path"], config["llm_cache_dir"])
    start = list(text_start_ids(tokenizer))
    texts = entity_texts(dataset, "item", config["item_text"])
    items = [i for i, t in enumerate(texts) if i and t.strip()]
    ids = [start + tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    print(f"popularity: valid NDCG@10 {ndcg_at_10(seen.sum(0).expand(n_users, -1), seen, truth):.4f}")
    user_rows = seen / seen.sum(1, keepdim=True).clamp(min=1)

    for weights in ("pretrained", "random"):
        lm = pretrained if weights == "pretrained" else randomly_initialised(pretrained, config["seed"])
        states = torch.zeros(len(layers), n_items, lm.config.hidden_size)
        with torch.no_grad():
            for batch in length_batches([len(x) for x in ids], 32, max_tokens=4096):
                tokens, mask = pad_batch([np.asarray(ids[i]) for i in batch], pad)
                tokens, mask = torch.as_tensor(tokens), torch.as_tensor(mask)
                out = lm.base_model(input_ids=tokens, attention_mask=mask, output_hidden_states=True)
                weight = mask.float()
                weight[:, : len(start)] = 0
                weight = weight / weight.sum(1, keepdim=True)
                rows = [items[i] for i in batch]
                for k, layer in enumerate(layers):
                    states[k, rows] = torch.einsum("bl,blh->bh", weight, out.hidden_states[layer].float())
        for k, layer in enumerate(layers):
            x = states[k, items]
            x = (x - x.mean(0)) / x.std(0).clamp(min=1e-6)
            z = torch.zeros(n_items, x.shape[1])
            z[items] = x
            unit = F.normalize(z, dim=1)
            knn = F.normalize(seen @ unit, dim=1) @ unit.t()
            # ridge: W = (X^T X + r I)^-1 X^T Y with Y the items' columns of the user-scaled matrix
            gram = x.t() @ x + args.ridge * torch.eye(x.shape[1])
            w = torch.linalg.solve(gram, x.t() @ user_rows[:, items].t())
            mapped = torch.zeros(n_users, n_items)
            mapped[:, items] = (x @ w).t()
            print(
                f"{weights:10s} layer {layer:2d}: knn valid NDCG@10 {ndcg_at_10(knn, seen, truth):.4f}"
                f"   map valid NDCG@10 {ndcg_at_10(mapped, seen, truth):.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
