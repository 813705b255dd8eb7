"""Conversion throughput and peak memory on a large synthetic Amazon-2018-style dump.

    python benchmarks/convert_throughput.py                 # 1M reviews, 100k items
    python benchmarks/convert_throughput.py --lines 200000  # quicker

Writes ``<Category>_5.json.gz`` and ``meta_<Category>.json.gz`` into a temporary folder (removed
afterwards unless --keep), runs ``python -m recbole_cllm4rec.data.convert`` on them in a child
process, and reports lines/s and the child's peak RSS. The child imports the whole package (and
with it RecBole and torch), so the import's time and RSS are reported separately.
"""

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
    "great product works well quality price size colour fits daughter son gift quick "
    "delivery broke week month love recommend would buy again cheap sturdy soft small large "
    "battery box instructions easy hard"
).split()


def _skewed_index(rng, n, power):
    """Index in [0, n) skewed towards 0: popular items and a long tail, as in real dumps."""
    return int(n * rng.random() ** power)


def write_dump(folder, lines, n_items, seed=0):
    """A "5-core" style dump: users come one after another with 5 + a few reviews each."""
    rng = random.Random(seed)
    reviews = os.path.join(folder, "Synthetic_5.json.gz")
    meta = os.path.join(folder, "meta_Synthetic.json.gz")
    item_ids = [f"B{i:09d}" for i in range(n_items)]
    written, user = 0, 0
    with gzip.open(reviews, "wt", encoding="utf-8", compresslevel=1) as f:
        while written < lines:
            user_id = f"A{rng.getrandbits(60):013X}"[:14]
            for _ in range(min(5 + int(rng.expovariate(1 / 4)), lines - written)):
                n_words = int(rng.expovariate(1 / 70)) + 3  # mean ~70 words, a long tail of essays
                f.write(
                    json.dumps(
                        {
                            "overall": float(rng.choices((1, 2, 3, 4, 5), (5, 5, 10, 25, 55))[0]),
                            "verified": True,
                            "reviewTime": "09 1, 2016",
                            "reviewerID": user_id,
                            "asin": item_ids[_skewed_index(rng, n_items, 1.5)],
                            "style": {"Size:": " Large"},
                            "reviewerName": "Someone",
                            "reviewText": " ".join(rng.choices(WORDS, k=n_words)),
                            "summary": " ".join(rng.choices(WORDS, k=4)),
                            "unixReviewTime": 1_300_000_000 + rng.randrange(10**8),
                        }
                    )
                    + "\n"
                )
                written += 1
            user += 1
    with gzip.open(meta, "wt", encoding="utf-8", compresslevel=1) as f:
        for item in item_ids:
            f.write(
                json.dumps(
                    {
                        "category": ["Synthetic", rng.choice(WORDS).title()],
                        "tech1": "",
                        "description": [" ".join(rng.choices(WORDS, k=60))],
                        "title": " ".join(rng.choices(WORDS, k=6)),
                        "also_buy": rng.sample(item_ids, 5),
                        "brand": rng.choice(WORDS).title(),
                        "feature": [],
                        "rank": "1 in Synthetic (",
                        "main_cat": "Synthetic",
                        "price": "$9.99",
                        "asin": item,
                    }
                )
                + "\n"
            )
    return reviews, meta, user


# Runs in a fresh interpreter so that its peak RSS is the conversion's alone.
CHILD = """
import json, resource, sys, time
t0 = time.time()
from recbole_cllm4rec.data.convert import main
t1 = time.time()
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = main(sys.argv[1:])
t2 = time.time()
rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "import_s": t1 - t0, "convert_s": t2 - t1,
                  "import_rss_mib": rss_import / 1024, "peak_rss_mib": rss_peak / 1024}))
"""


def convert_in_child(args):
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT)
    *summary, last = out.stdout.strip().splitlines() or [""]
    result = json.loads(last) if last.startswith("{") else {"code": out.returncode}
    if result["code"]:
        raise SystemExit(f"conversion failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return result, "\n".join(summary)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="review lines (default 1M)")
    parser.add_argument("--items", type=int, default=None, help="items, also metadata lines (default: lines / 10)")
    parser.add_argument("--workdir", default=None, help="where to write the dump (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the dump and the output")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="convert-bench-", dir=args.workdir)
    try:
        t0 = time.time()
        n_items = args.items or max(args.lines // 10, 10)
        reviews, meta, n_users = write_dump(folder, args.lines, n_items)
        print(
            f"dump: {args.lines:,} reviews by {n_users:,} users ({os.path.getsize(reviews) / 2**20:.0f} MiB gz), "
            f"{n_items:,} metadata lines ({os.path.getsize(meta) / 2**20:.0f} MiB gz), "
            f"written in {time.time() - t0:.0f} s"
        )

        result, summary = convert_in_child(
            [
                "amazon",
                "--reviews",
                reviews,
                "--meta",
                meta,
                "--name",
                "bench",
                "--output-dir",
                os.path.join(folder, "out"),
                "--no-progress",
            ]
        )
        print(summary)
        out = os.path.join(folder, "out", "bench")
        sizes = {f: os.path.getsize(os.path.join(out, f)) / 2**20 for f in sorted(os.listdir(out))}
        print(
            f"conversion: {result['convert_s']:.1f} s, {args.lines / result['convert_s']:,.0f} review lines/s "
            f"(plus {result['import_s']:.1f} s importing the package, RecBole and torch)"
        )
        print(
            f"peak RSS: {result['peak_rss_mib']:.0f} MiB, of which {result['import_rss_mib']:.0f} MiB "
            f"after the import alone: ~{result['peak_rss_mib'] - result['import_rss_mib']:.0f} MiB "
            "for the conversion"
        )
        print("output: " + ", ".join(f"{f} {s:.1f} MiB" for f, s in sizes.items()))
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
