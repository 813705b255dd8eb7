"""What the language model contributes to CLLM4Rec: a suite of (protocol, group, seed) cells, each
one ``run_recbole.py`` invocation writing its own table, then one report over every cell present.

    python benchmarks/llm_contribution.py run --protocols sparse,cold-item --seeds 2020 --dry-run
    python benchmarks/llm_contribution.py run --groups "baselines,CLLM4Rec,CLLM4Rec random weights"
    python benchmarks/llm_contribution.py report
    python benchmarks/llm_contribution.py rare-share     # where an item's text can matter at all

Cells go to results/llm-contribution/<protocol>/<group slug>-seed<S>.md; a cell whose table has a
row for every model it trains is skipped (``--force`` reruns it), so ``run`` resumes after a kill.
"""

import argparse
import math
import os
import re
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS_DIR = os.path.join("results", "llm-contribution")

PROTOCOLS = {
    "default": [],
    "sparse": ["properties/protocol/ml-100k-sparse.yaml"],
    "cold-item": ["properties/protocol/ml-100k-cold-item.yaml"],
    "cold-user": ["properties/protocol/ml-100k-cold-user.yaml"],
    "sparse-item": ["properties/protocol/ml-100k-sparse-item.yaml"],
}
SEEDS = [2020, 2021, 2022]
# Cold protocols swap ItemKNN for Random: a cold item or user has no neighbours to read.
BASELINES = {
    "default": "Pop,BPR,MultiVAE,LightGCN,EASE,ItemKNN",
    "sparse": "Pop,BPR,MultiVAE,LightGCN,EASE,ItemKNN",
    "cold-item": "Pop,Random,BPR,MultiVAE,LightGCN,EASE",
    "cold-user": "Pop,Random,BPR,MultiVAE,LightGCN,EASE",
    "sparse-item": "Pop,Random,BPR,MultiVAE,LightGCN,EASE,ItemKNN",
}
LANGUAGE = "AlphaRec,TextKNN"
# Separate invocations: run_recbole's --key=value flags reach every model of a comma list.
CLLM4REC_VARIANTS = {
    "CLLM4Rec": [],
    "CLLM4Rec random weights": ["--llm_weights=random"],
    "CLLM4Rec no text": [],
    # the weights alone, as a transformer over ID words: where the text prior is off
    "CLLM4Rec random weights no text": ["--llm_weights=random"],
}
# Every CLLM4Rec cell runs a third of the default's 30 epochs, validates every 2 and ranks with 2
# history orders instead of 8 (27 runs of the full default would take about 6 hours on 2 cores).
CLLM4REC_SCHEDULE = ["--epochs=10", "--eval_step=2", "--eval_prompt_draws=2", "--stopping_step=10"]
# The flags that take every text path away from the default (its item rows' text prior; on the
# cold-user protocol also the profile map the protocol turns on).
NO_TEXT = {
    "default": ["--cold_item_rows=trained"],
    "sparse": ["--cold_item_rows=trained"],
    "cold-item": ["--cold_item_rows=trained"],
    "sparse-item": ["--cold_item_rows=trained"],
    "cold-user": ["--cold_item_rows=trained", "--cold_user_states=trained"],
}
# Where the main table mixes in interactions the protocol is not about, the test metrics come
# from the cell's own extra table (its title, as written above the table).
TEST_TABLE = {"cold-user": "Test, the cold users only:"}
ID_BASELINES = ["Pop", "BPR", "MultiVAE", "LightGCN", "EASE", "ItemKNN"]
# label -> (variant, variant it is paired against): the first minus the second, per seed
ABLATIONS = {
    "vs random weights": ("CLLM4Rec", "CLLM4Rec random weights"),
    "vs no text": ("CLLM4Rec", "CLLM4Rec no text"),
    "no text vs random weights no text": ("CLLM4Rec no text", "CLLM4Rec random weights no text"),
}
COLUMNS = {
    "test ndcg@10": "ndcg",
    "test recall@10": "recall",
    "valid ndcg@10": "valid",
    "train s": "secs",
    "peak rss mb": "rss",
}


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def groups():
    """Group name -> (models of the invocation, or None per protocol, extra flags)."""
    return {
        "baselines": (None, []),
        "language": (LANGUAGE, []),
        **{v: ("CLLM4Rec", f) for v, f in CLLM4REC_VARIANTS.items()},
    }


def cell(protocol, group, seed):
    """(results path, models, argv) of one cell; argv starts with plain ``python``, as documentation."""
    models, flags = groups()[group]
    models = models or BASELINES[protocol]
    path = os.path.join(CELLS_DIR, protocol, f"{slug(group)}-seed{seed}.md")
    argv = ["python", "run_recbole.py", f"--model={models}"]
    if PROTOCOLS[protocol]:
        argv.append(f"--config_files={' '.join(PROTOCOLS[protocol])}")
    argv += [f"--seed={seed}", "--show_progress=False", f"--results_file={path}"]
    schedule = CLLM4REC_SCHEDULE if group in CLLM4REC_VARIANTS else []
    no_text = NO_TEXT[protocol] if group.endswith(" no text") else []
    return path, models, argv + schedule + flags + no_text


def split_row(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_table(lines, head_at, columns):
    """Rows of the markdown table whose header is ``lines[head_at]``: model -> {key: float or None}."""
    head = split_row(lines[head_at].lower())
    rows = {}
    for line in lines[head_at + 2 :]:  # header, then the |---| rule
        if not line.startswith("|"):
            break
        cells = split_row(line)
        values = {}
        for col, key in columns.items():
            try:  # a failed model's row says why in its second cell and leaves the rest empty: missing
                values[key] = float(cells[head.index(col)]) if col in head else None
            except (ValueError, IndexError):
                values[key] = None
        rows[cells[0]] = values
    return rows


def read_table(path, test_table=None):
    """Rows of the first table with a ``test ndcg@10`` column: model -> {key: float or None}; with
    ``test_table`` (a title line), its test metrics come from the table under that title."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    heads = [i for i, line in enumerate(lines) if line.startswith("|") and "test ndcg@10" in split_row(line.lower())]
    if not heads:
        return {}
    rows = parse_table(lines, heads[0], COLUMNS)
    if test_table:
        titled = [i for i, line in enumerate(lines) if line == test_table]
        test_columns = {col[len("test ") :]: key for col, key in COLUMNS.items() if col.startswith("test ")}
        extra = parse_table(lines, titled[0] + 2, test_columns) if titled else {}
        for model, values in rows.items():  # a cell without that table has no test metrics here
            values.update(extra.get(model, dict.fromkeys(test_columns.values())))
    return rows


def complete(path, models):
    """Every model has a row; a failed model's row counts (a rerun would most likely fail alike)."""
    path = os.path.join(ROOT, path)
    return os.path.exists(path) and set(models.split(",")) <= set(read_table(path))


def run(args):
    chosen = [g.strip() for g in args.groups.split(",")] if args.groups else list(groups())
    by_name = {g.lower(): g for g in groups()} | {slug(g): g for g in groups()}
    unknown = [g for g in chosen if g.lower() not in by_name]
    unknown += [p for p in args.protocols.split(",") if p not in PROTOCOLS]
    if unknown:
        raise SystemExit(f"error: unknown {unknown}; protocols {list(PROTOCOLS)}, groups {list(groups())}")
    failed = []
    for protocol in args.protocols.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for group in [by_name[g.lower()] for g in chosen]:
                path, models, argv = cell(protocol, group, seed)
                if not args.force and complete(path, models):
                    print(f"skip (complete): {path}")
                    continue
                print(shlex.join(argv), flush=True)
                if not args.dry_run and subprocess.run([sys.executable, *argv[1:]], cwd=ROOT).returncode:
                    print(f"error: cell failed: {path}", file=sys.stderr)
                    failed.append(path)
    if failed:  # the loop went on; the exit code still says a cell failed
        raise SystemExit(f"{len(failed)} cell(s) failed: {', '.join(failed)}")


def stats(values):
    mean = statistics.mean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def show(values):
    mean, std = stats(values)
    return f"{mean:.4f} (1 seed)" if len(values) == 1 else f"{mean:.4f} ± {std:.4f}"


def collect():
    """protocol -> row name -> seed -> values, from every cell file present."""
    names = {slug(g): g for g in groups()}
    data = {}
    for protocol in PROTOCOLS:
        folder = os.path.join(ROOT, CELLS_DIR, protocol)
        for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            match = re.fullmatch(r"(.+)-seed(\d+)\.md", file)
            if not match or match[1] not in names:
                continue
            group = names[match[1]]
            for model, values in read_table(os.path.join(folder, file), TEST_TABLE.get(protocol)).items():
                if values["ndcg"] is not None:  # a variant's row says CLLM4Rec: name it by its variant
                    name = group if group in CLLM4REC_VARIANTS else model
                    data.setdefault(protocol, {}).setdefault(name, {})[int(match[2])] = values
    return data


def paired(runs, a, b, key):
    """Per-seed differences a - b over the seeds both have, and the spread (larger seed std of the two)."""
    seeds = [
        s for s in sorted(set(runs.get(a, {})) & set(runs.get(b, {}))) if None not in (runs[a][s][key], runs[b][s][key])
    ]
    diffs = [runs[a][s][key] - runs[b][s][key] for s in seeds]
    spread = max(stats([runs[n][s][key] for s in seeds])[1] for n in (a, b)) if seeds else math.nan
    return seeds, diffs, spread


def judge(diffs, spread, ahead, behind, level):
    """Cells: the paired difference, and where it stands against the spread."""
    if len(diffs) < 2:
        return [show(diffs), "n/a (1 seed)"] if diffs else ["", ""]
    mean = statistics.mean(diffs)
    return [show(diffs), ahead if mean > spread else behind if mean < -spread else level]


def table(head):
    """Header and rule of a markdown table from ``"a | b | c"``."""
    return [f"| {head} |", "|" + "---|" * len(head.split("|"))]


def row(*cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def summary(seeds):
    """A protocol table's cells: seeds, metrics mean ± std, train seconds mean, peak RSS max."""
    cols = [", ".join(map(str, sorted(seeds)))]
    for key, fmt in [("ndcg", show), ("recall", show), ("valid", show), ("secs", statistics.mean), ("rss", max)]:
        vals = [v[key] for v in seeds.values() if v[key] is not None]
        cols.append("" if not vals else fmt(vals) if fmt is show else f"{fmt(vals):.{1 if key == 'secs' else 0}f}")
    return cols


def report(args):
    data, out, plot = collect(), [], {}
    for protocol, runs in data.items():
        out += [f"## {protocol}", ""]
        out += table(
            "model / variant | seeds run | test NDCG@10 | test Recall@10 | valid NDCG@10 | train s (mean) | peak RSS MB (max)"
        )
        for name, seeds in sorted(runs.items(), key=lambda kv: -statistics.mean(v["ndcg"] for v in kv[1].values())):
            out.append(row(name, *summary(seeds)))
        out.append("")
    out += ["## The language model's contribution", ""]
    out += table(
        "protocol | comparison | seeds paired | test NDCG@10 diff | test verdict | valid NDCG@10 diff | valid verdict"
    )
    for protocol, runs in data.items():
        for label, (variant, other) in ABLATIONS.items():
            (seeds, test, spread), (_, valid, valid_spread) = (
                paired(runs, variant, other, k) for k in ("ndcg", "valid")
            )
            if seeds:
                plot.setdefault(protocol, {})[label] = stats(test)
                words = ("pretrained ahead", "behind", "no difference")
                cols = judge(test, spread, *words) + judge(valid, valid_spread, *words)
                out.append(row(protocol, label, ", ".join(map(str, seeds)), *cols))
    out += [
        "",
        "Differences: CLLM4Rec minus the variant, paired by seed (only the seeds both ran), mean ± sample std. "
        "Verdict: ahead if the mean difference exceeds the spread, behind if it is under minus the spread, "
        "else no difference; spread = the larger of the two variants' std over the paired seeds.",
        "",
        "## CLLM4Rec against the ID baselines (test NDCG@10)",
        "",
    ]
    out += table("protocol | variant | baseline | seeds paired | variant | baseline | variant - baseline | verdict")
    for protocol, runs in data.items():
        for variant, base in [(v, b) for v in ("CLLM4Rec", "CLLM4Rec no text") for b in ID_BASELINES if b in runs]:
            seeds, diffs, spread = paired(runs, variant, base, "ndcg")
            if seeds:
                both = [show([runs[n][s]["ndcg"] for s in seeds]) for n in (variant, base)]
                cols = both + judge(diffs, spread, "at or above", "below", "at or above")
                out.append(row(protocol, variant, base, ", ".join(map(str, seeds)), *cols))
    out += ["", "Same rule: below if the mean paired difference is under minus the spread, else at or above.", ""]
    out += ["## Commands", ""]
    for protocol in PROTOCOLS:
        lines = []
        cells = (cell(protocol, g, s) for s in SEEDS for g in groups())
        for path, models, argv in cells:
            present = os.path.exists(os.path.join(ROOT, path))
            note = "" if complete(path, models) else "  # incomplete" if present else "  # not run yet"
            lines.append(shlex.join(argv) + note)
        out += [f"<details><summary>{protocol}</summary>", "", "```", *lines, "```", "", "</details>", ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print(f"written to {args.output}")
    if args.plot and plot:
        draw(plot, args.plot)


def rare_share(args):
    """How much of each protocol's test rests on items with few training interactions: where an
    item's text can matter at all (RecBole's split of the given seed, no model trained)."""
    import numpy as np
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    sys.path.insert(0, ROOT)
    from recbole_cllm4rec.quick_start import build_config

    cuts = [0, 5, 10, 20]
    out = table(
        "protocol | " + " | ".join(f"test interactions on items with <= {k}" for k in cuts) + " | items with <= 5"
    )
    for protocol, files in PROTOCOLS.items():
        config = build_config("Pop", "ml-100k", files, {"seed": args.seed, "state": "ERROR", "show_progress": False})
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train, _, test = data_preparation(config, dataset)
        field = dataset.iid_field
        counts = np.bincount(train._dataset.inter_feat[field].numpy(), minlength=dataset.item_num)
        tested = counts[test._dataset.inter_feat[field].numpy()]
        shares = [f"{np.mean(tested <= k):.1%}" for k in cuts]
        out.append(row(protocol, *shares, f"{np.mean(counts[1:] <= 5):.1%}"))
    print("\n".join([f"Seed {args.seed}; counts are training interactions per item.", "", *out]))


def draw(plot, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(ABLATIONS)
    for i, (label, (variant, other)) in enumerate(ABLATIONS.items()):
        xs = [p + (i - (len(ABLATIONS) - 1) / 2) * width for p in range(len(plot))]
        means = [plot[p].get(label, (math.nan, math.nan)) for p in plot]
        errs = [0 if math.isnan(s) else s for _, s in means]  # one seed: no error bar
        ax.bar(xs, [m for m, _ in means], width, yerr=errs, capsize=3, label=f"{variant} minus {other}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(plot)), list(plot))
    ax.set_xlabel("protocol")
    ax.set_ylabel("test NDCG@10 difference")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the cells one at a time")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--groups", default=None, help=f"comma list of {list(groups())} (default all)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--force", action="store_true", help="rerun cells whose table is complete")
    p = sub.add_parser("report", help="aggregate every cell present")
    p.add_argument("--output", default="results/cllm4rec-llm-contribution-tables.md")
    p.add_argument("--plot", default="results/cllm4rec-llm-contribution.png")
    p = sub.add_parser("rare-share", help="share of each protocol's test on items with few training interactions")
    p.add_argument("--seed", type=int, default=SEEDS[0])
    args = parser.parse_args()
    {"run": run, "report": report, "rare-share": rare_share}[args.command](args)


if __name__ == "__main__":
    main()
