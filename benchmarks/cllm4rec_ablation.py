"""CLLM4Rec ablations on one dataset and split, each variant in its own process:

    python benchmarks/cllm4rec_ablation.py                      # all variants, ml-100k
    python benchmarks/cllm4rec_ablation.py --variants "no MR,no pretraining" --epochs=3

Writes results/cllm4rec-ablation-<dataset>.md. Extra ``--key=value`` arguments apply to every
variant (e.g. a shorter schedule); say so next to the numbers.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from run_recbole import parse_overrides  # noqa: E402

VARIANTS = {
    "full": {},
    "no content": {"use_content": False},          # collaborative-only: no content LM, no MR
    "no MR": {"mr_weight": 0.0},                     # both LMs, untied
    "no pretraining": {"pretrain_epochs": 0, "content_warmup_epochs": 0},
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
    _, table = compare_variants("CLLM4Rec", {v: VARIANTS[v] for v in chosen}, args.dataset,
                                config_dict=parse_overrides(rest), results_file=results_file)
    print(table)
    print(f"\nwritten to {results_file}")


if __name__ == "__main__":
    main()
