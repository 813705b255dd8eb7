"""AlphaRec against LightGCN, MultiVAE, EASE and its own ID ablation on several ml-100k
protocols, every model with its own property-file defaults (no per-protocol tuning):

    python benchmarks/alpharec_robustness.py                 # all protocols
    python benchmarks/alpharec_robustness.py --protocols implicit --models AlphaRec,LightGCN

Writes results/alpharec-robustness.md (one table per protocol, the command above each) and,
with matplotlib installed, results/alpharec-curve.png: AlphaRec's training loss and validation
NDCG@10 per epoch under the previous and the current defaults, read from the runs' logs.
"""

import argparse
import os

from recbole_cllm4rec.logs import train_losses, valid_curve
from recbole_cllm4rec.quick_start import command_line, compare_variants

PROTOCOLS = {
    "implicit": ("ratings >= 4 as positives, 5-core, random 80/10/10 per user, seed 2021", "ml-100k-implicit.yaml"),
    "temporal": ("ratings >= 4 as positives, 10-core, temporal 80/10/10 per user, seed 2022", "ml-100k-temporal.yaml"),
    "default": ("the default protocol (all ratings, random 80/10/10 per user), seed 2023", "ml-100k-seed2023.yaml"),
}
# label -> (model, overrides)
RUNS = {
    "AlphaRec": ("AlphaRec", {}),
    "AlphaRec (ID embeddings)": ("AlphaRec", {"item_representation": "id"}),
    "LightGCN": ("LightGCN", {}),
    "MultiVAE": ("MultiVAE", {}),
    "EASE": ("EASE", {}),
}
# The defaults before issue 14, run on one protocol only: the "before" curve of the plot.
PREVIOUS = ("AlphaRec (previous defaults)", "AlphaRec", {"learning_rate": 0.002, "eval_step": 1, "stopping_step": 20})
PREVIOUS_ON = "implicit"
INTRO = """Written by `python benchmarks/alpharec_robustness.py`. Every model runs with its own property
file's defaults on each protocol (nothing tuned per protocol); selection on validation NDCG@10,
test read once. `train s` is RecBole's fit wall time on 2 CPU cores, one job at a time; `epochs`
counts the epochs trained before early stopping. The protocols' yaml files are in
`properties/protocol/`. ![AlphaRec's training loss and validation NDCG@10 per epoch](alpharec-curve.png)"""
COLUMNS = ["valid ndcg@10", "test ndcg@10", "test recall@10"]


def table(results):
    rows = ["| model | " + " | ".join(COLUMNS) + " | train s | epochs |", "|---|" + "---|" * (len(COLUMNS) + 2)]
    for r in results:
        if r.get("failed"):
            rows.append(f"| {r['model']} | failed: {r['failed']} |" + " |" * (len(COLUMNS) + 1))
            continue
        values = [r["best_valid_result"]["ndcg@10"], r["test_result"]["ndcg@10"], r["test_result"]["recall@10"]]
        epochs = len(train_losses(r["log_file"])) if r.get("log_file") else ""
        rows.append(
            f"| {r['model']} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {r['train_time_s']:.0f} | {epochs} |"
        )
    return "\n".join(rows)


def curve(results_by_protocol, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [
        (p, r)
        for p, results in results_by_protocol.items()
        for r in results
        if r["model"] in ("AlphaRec", "AlphaRec (previous defaults)") and r.get("log_file")
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for protocol, r in chosen:
        label = f"{r['model']} ({protocol})"
        line = axes[0].plot(*zip(*train_losses(r["log_file"])), label=label, linewidth=1)[0]
        axes[1].plot(*zip(*valid_curve(r["log_file"])), label=label, marker=".", color=line.get_color())
    axes[0].set_title("training loss (sum over an epoch's batches)")
    axes[1].set_title("valid NDCG@10")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma list of {list(PROTOCOLS)}")
    parser.add_argument("--models", default=",".join(RUNS), help=f"comma list of {list(RUNS)}")
    parser.add_argument("--previous", type=int, default=1, help=f"also run {PREVIOUS[0]!r} on {PREVIOUS_ON!r}")
    parser.add_argument("--results_file", default="results/alpharec-robustness.md")
    parser.add_argument("--curve", default="results/alpharec-curve.png")
    args = parser.parse_args()
    protocols = [p.strip() for p in args.protocols.split(",")]
    labels = [m.strip() for m in args.models.split(",")]
    unknown = [p for p in protocols if p not in PROTOCOLS] + [m for m in labels if m not in RUNS]
    if unknown:
        parser.error(f"unknown protocols or models {unknown}")

    sections, results_by_protocol = [], {}
    for name in protocols:
        title, yaml_file = PROTOCOLS[name]
        files = [os.path.join("properties", "protocol", yaml_file)]  # run from the repository root
        results, commands = [], []
        runs = [(label, *RUNS[label]) for label in labels] + (
            [PREVIOUS] if name == PREVIOUS_ON and args.previous else []
        )
        for label, model, overrides in runs:
            found, _ = compare_variants(model, {label: overrides}, config_file_list=files)
            results += found
            commands.append(f"    {label}: {command_line([model], 'ml-100k', files, overrides)}")
        results_by_protocol[name] = results
        sections.append(f"## {title}\n\n" + "\n".join(commands) + "\n\n" + table(results))
        print(sections[-1], flush=True)
        with open(args.results_file, "w", encoding="utf-8") as f:  # after each protocol: nothing lost
            f.write("# AlphaRec across ml-100k protocols\n\n" + INTRO + "\n\n" + "\n\n".join(sections) + "\n")
    print(f"written to {args.results_file}")
    try:
        curve(results_by_protocol, args.curve)
        print(f"written to {args.curve}")
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no curve drawn")


if __name__ == "__main__":
    main()
