"""CLLM4Rec's ways of forming a cold item's row, compared on one trained model (no retraining:
the rows are formed at ranking time, see recbole_cllm4rec/model/cold_items.py):

    python benchmarks/cold_item_rows.py saved/CLLM4Rec-<run>.pth --output results/cold-start/cllm4rec-cold-item-rows.md

The checkpoint must come from a run on a cold-item protocol; its test split is rebuilt from the
checkpoint's own config (same seed, same cold items).
"""

import argparse
import contextlib
import os

import torch

COLUMNS = ["ndcg@10", "recall@10", "hit@10"]


@contextlib.contextmanager
def content_rows(model, rows):
    saved = model.item_content.weight.detach().clone()
    with torch.no_grad():
        model.item_content.weight.copy_(rows)
    try:
        yield
    finally:
        with torch.no_grad():
            model.item_content.weight.copy_(saved)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_file")
    parser.add_argument("--output", default="results/cold-start/cllm4rec-cold-item-rows.md")
    args = parser.parse_args()

    from recbole.quick_start import load_data_and_model

    from recbole_cllm4rec.coldstart import all_candidates, protocol_of
    from recbole_cllm4rec.model import cold_items
    from recbole_cllm4rec.model.cold_items import ranking_rows, text_rows
    from recbole_cllm4rec.registry import get_trainer

    config, model, _, train, _, test = load_data_and_model(args.model_file)
    config.compatibility_settings()  # RecBole's metrics need numpy aliases a fresh Config sets; an unpickled one does not
    if protocol_of(config) != "item":
        raise SystemExit(f"error: {args.model_file} was not trained on a cold-item protocol (cold_item_ratio is unset)")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    # The prompt states do not depend on the item rows: compute each batch's once for all variants.
    states, prompt_states = {}, model.prompt_states

    def cached_states(users, visible):
        key = tuple(int(u) for u in users)
        if key not in states:
            states[key] = prompt_states(users, visible)
        return states[key]

    model.prompt_states = cached_states
    variants = [
        ("trained (never a target)", "trained", None),
        ("content row as is", "content", None),
        ("content_map (content rows after the content LM)", "content_map", None),
        ("content_map, mapped bias only (one ranking for all users)", "bias_only", None),
    ]
    if config["content_init"] == "text":
        variants.append(
            (
                "content_map on the text-initialised rows (before the content LM)",
                "content_map",
                text_rows(model, train._dataset, config["item_text"]).to(model.device),
            )
        )
    rows = []
    for label, mode, initial in variants:
        model.cold_item_rows = "content_map" if mode == "bias_only" else mode
        if mode == "bias_only":  # the mapped rows of the cold items zeroed: their bias alone ranks them
            mapped, bias = ranking_rows(model)
            mapped[test._dataset.candidate_items.to(mapped.device)] = 0
            cold_items.ranking_rows = lambda _model, rows=(mapped, bias): rows
        with content_rows(model, initial) if initial is not None else contextlib.nullcontext():
            cold = trainer.evaluate(test, load_best_model=False)
            with all_candidates(test):
                whole = trainer.evaluate(test, load_best_model=False)
        cold_items.ranking_rows = ranking_rows
        rows.append(
            f"| {label} | "
            + " | ".join(f"{cold[c]:.4f}" for c in COLUMNS)
            + " | "
            + " | ".join(f"{whole[c]:.4f}" for c in COLUMNS)
            + " |"
        )
        print(rows[-1], flush=True)
    head = ["cold item row"] + [f"cold {c}" for c in COLUMNS] + [f"whole catalogue {c}" for c in COLUMNS]
    lines = [
        "# CLLM4Rec: how a cold item's row is formed, one trained model",
        "",
        f"Model file: `{os.path.basename(args.model_file)}` (config: use_content {config['use_content']}, "
        f"content_init {config['content_init']}, mr_weight {config['mr_weight']}). Command:",
        "",
        f"    python benchmarks/cold_item_rows.py {args.model_file}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *rows,
        "",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
