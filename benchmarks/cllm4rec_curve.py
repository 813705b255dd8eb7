"""Validation NDCG@10 per epoch of CLLM4Rec runs, read from their RecBole logs, against the best
validation score of baselines from a comparison results file; written as a PNG.

    pip install -e .[bench]
    python benchmarks/cllm4rec_curve.py --run "default=log/CLLM4Rec/<default run>.log" \
        --run "paper preset=log/CLLM4Rec/<preset run>.log" \
        --baselines results/cllm4rec-ml-100k.md --output results/cllm4rec-valid-curve-ml-100k.png
"""

import argparse

from recbole_cllm4rec.logs import valid_curve


def best_valid(results_path, metric="valid ndcg@10"):
    """{model: best validation score} from a comparison table written by ``compare``."""
    with open(results_path, encoding="utf-8") as f:
        rows = [line.strip().strip("|").split("|") for line in f if line.startswith("|")]
    head = [cell.strip() for cell in rows[0]]
    column = head.index(metric)
    return {row[0].strip(): float(row[column]) for row in rows[2:] if len(row) == len(head)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="label=path of a CLLM4Rec log")
    parser.add_argument("--baselines", required=True, help="results file with a 'valid ndcg@10' column")
    parser.add_argument("--models", default="MultiVAE,LightGCN,EASE", help="baselines drawn as lines")
    parser.add_argument("--line", action="append", default=[], help="label=value: one more best-valid line")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in args.run:
        label, path = spec.split("=", 1)
        epochs, scores = zip(*valid_curve(path))
        ax.plot(epochs, scores, marker="o", label=f"CLLM4Rec, {label}")
    baselines = best_valid(args.baselines)
    baselines.update({label: float(value) for label, value in (spec.split("=", 1) for spec in args.line)})
    for model in args.models.split(",") + [spec.split("=", 1)[0] for spec in args.line]:
        if model in baselines:
            ax.axhline(baselines[model], linestyle="--", linewidth=1, color="grey")
            ax.annotate(
                f"{model} (best valid)",
                (0.01, baselines[model]),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                xytext=(0, 2),
                fontsize=8,
            )
    ax.set_xlabel("finetuning epoch")
    ax.set_ylabel("valid NDCG@10")
    ax.set_title("CLLM4Rec on ml-100k (2 CPU cores): validation per epoch")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
