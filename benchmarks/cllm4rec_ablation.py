"""CLLM4Rec ablations on one dataset and split, each variant in its own process:

    python benchmarks/cllm4rec_ablation.py                      # all variants, ml-100k
    python benchmarks/cllm4rec_ablation.py --variants "no MR,no pretraining" --epochs=3

Writes results/cllm4rec-ablation-<dataset>.md. Extra ``--key=value`` arguments apply to every
variant (e.g. a shorter schedule); say so next to the numbers.
"""

import argparse
import os

from recbole_cllm4rec.quick_start import parse_overrides

PAPER_PRESET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "properties", "preset", "CLLM4Rec-paper.yaml"
)


def paper_preset():
    import yaml

    with open(PAPER_PRESET, encoding="utf-8") as f:
        return yaml.safe_load(f)


# One row per lever: each departs from the default in that lever alone.
VARIANTS = {
    "default": {},
    "paper preset": paper_preset(),  # properties/preset/CLLM4Rec-paper.yaml
    "last-state read-out (paper)": {"readout": "last"},
    "all 30 layers (paper)": {"readout_layers": 0},
    "ID rows at raw scale (paper)": {"id_input_scale": 1.0},
    "raw dot-product head without bias (paper)": {"scaled_item_logits": False, "item_bias": False},
    "masked target (paper)": {"finetune_target": "masked"},
    "content LM + MR at lambda_V 1 (paper)": {"use_content": True},
    "content LM without MR": {"use_content": True, "mr_weight": 0.0},
    "no pretraining": {"pretrain_epochs": 0, "content_warmup_epochs": 0},
    "LoRA r=8 on q/k/v/o": {"lora_rank": 8},
    "whole histories (400 / 400 items)": {"max_doc_items": 400, "eval_max_doc_items": 400},
    "one history order at ranking (paper)": {"eval_prompt_draws": 1},
    "cosine learning rate": {"learning_rate_schedule": "cosine"},
    "user rows frozen in finetuning": {"train_rec_user_rows": False},
    "random-weight backbone": {"llm_weights": "random"},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--results_file", default=None)
    args, rest = parser.parse_known_args()
    chosen = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    from recbole_cllm4rec.quick_start import compare_variants

    results_file = args.results_file or f"results/cllm4rec-ablation-{args.dataset}.md"
    comparison = compare_variants(
        "CLLM4Rec",
        {v: VARIANTS[v] for v in chosen},
        args.dataset,
        config_dict=parse_overrides(rest),
        results_file=results_file,
    )
    print(comparison[1])
    print(f"\nwritten to {comparison.results_file}")  # a fallback when results_file could not be written


if __name__ == "__main__":
    main()
