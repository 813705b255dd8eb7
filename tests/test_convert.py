"""The raw-dump converter, the review side file, and RecBole loading what they produce."""

import gzip
import json
import os
import shutil
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from recbole_cllm4rec.data import convert
from recbole_cllm4rec.data.convert import ConversionError, Converter, clean_field, kcore, latest_per_pair
from recbole_cllm4rec.data.reviews import iter_reviews, read_reviews

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW = os.path.join(ROOT, "dataset", "samples", "raw")


def run(source, reviews, meta, out, name="ds", **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda *args: None)
    return Converter(source, str(reviews), meta and str(meta), str(out), name, **kwargs).convert()


def read_atomic(path):
    """Read an atomic file the way RecBole 1.2.1 does (python engine, default quoting)."""
    return pd.read_csv(path, delimiter="\t", dtype=str, engine="python", keep_default_na=False)


def load(out, name="ds"):
    folder = os.path.join(out, name)
    return (
        read_atomic(os.path.join(folder, f"{name}.inter")),
        read_atomic(os.path.join(folder, f"{name}.item")),
        read_reviews(folder, name),
    )


def amazon_line(user, item, rating, stamp=1_400_000_000, text="fine", **extra):
    return json.dumps(
        {
            "reviewerID": user,
            "asin": item,
            "overall": rating,
            "unixReviewTime": stamp,
            "reviewText": text,
            "summary": "s",
            **extra,
        }
    )


def write_lines(path, lines, compress=False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    with gzip.open(path, "wb") if compress else open(path, "wb") as f:
        f.write(data)
    return path


def grid(n_users, n_items, rating=5.0):
    """Every user reviews every item: an input that any k <= min(n_users, n_items) keeps whole."""
    return [
        amazon_line(f"U{u}", f"I{i}", rating, 1_400_000_000 + u * 100 + i, f"u{u} on i{i}")
        for u in range(n_users)
        for i in range(n_items)
    ]


def assert_core(inter, k):
    assert min(Counter(inter["user_id:token"]).values()) >= k
    assert min(Counter(inter["item_id:token"]).values()) >= k


def assert_consistent(inter, reviews):
    pairs = set(zip(inter["user_id:token"], inter["item_id:token"]))
    assert len(pairs) == len(inter), "one row per (user, item) pair"
    assert {(u, i) for u, i, _ in reviews} <= pairs


# ----------------------------------------------------------------------------- shipped samples


def test_amazon_2014_sample(tmp_path):
    summary = run("amazon", f"{RAW}/reviews_Beauty_5.json.gz", f"{RAW}/meta_Beauty.json.gz", tmp_path)
    inter, item, reviews = load(tmp_path)
    assert_core(inter, 5)
    assert_consistent(inter, reviews)
    assert (inter["rating:float"].astype(float) >= 4).all()
    assert list(item.columns) == [
        "item_id:token",
        "title:token",
        "brand:token",
        "categories:token",
        "description:token",
    ]
    assert set(item["item_id:token"]) == set(inter["item_id:token"])
    assert summary["counts"]["items"] >= 30 and summary["counts"]["users"] >= 30
    assert summary["reviews_file"]["malformed"] == 1
    assert summary["counts"]["items_without_metadata"] == 1
    described = item[item["title:token"] != ""].iloc[0]
    # 2014 metadata: Python literal, HTML entity unescaped, tags and tabs gone, categories flattened.
    assert "&amp;" not in described["title:token"] and "&" in described["title:token"]
    assert described["categories:token"].startswith("Beauty, ")
    assert "<br>" not in described["description:token"] and "\t" not in described["description:token"]
    texts = {text for _, _, text in reviews}
    assert any("\t" in t and "\n" in t and t.startswith('"') for t in texts), "raw review text kept"


def test_amazon_2018_sample_plain_json(tmp_path):
    summary = run(
        "amazon", f"{RAW}/Toys_and_Games_5.json", f"{RAW}/meta_Toys_and_Games.json", tmp_path, progress=True
    )  # the tqdm path runs too
    inter, item, reviews = load(tmp_path)
    assert_core(inter, 5)
    assert_consistent(inter, reviews)
    assert summary["counts"]["duplicates_removed"] == 1
    described = item[item["description:token"] != ""].iloc[0]
    # 2018: description is a list of strings, category a flat list; quotes become apostrophes.
    assert "'Quoted' features" in described["description:token"]
    assert described["categories:token"].startswith("Toys & Games, ")
    # A review without reviewText falls back to its summary.
    assert all(text for _, _, text in reviews) and len(reviews) == len(inter)


def test_yelp_sample(tmp_path):
    summary = run("yelp", f"{RAW}/review.json", f"{RAW}/business.json", tmp_path)
    inter, item, reviews = load(tmp_path)
    assert_core(inter, 5)
    assert_consistent(inter, reviews)
    assert list(item.columns) == ["item_id:token", "name:token", "categories:token", "city:token", "state:token"]
    assert item["name:token"].str.endswith("Café").all()
    assert summary["reviews_file"]["malformed"] == 1 and summary["meta_file"]["malformed"] == 1
    # Dates become UTC unix time: every row's timestamp is one of its pair's raw dates.
    raw_stamps = {}
    with open(f"{RAW}/review.json") as f:
        for line in f:
            try:
                obj = json.loads(line)
                stamp = int(pd.Timestamp(obj["date"], tz="UTC").timestamp())
            except (ValueError, KeyError):
                continue
            raw_stamps.setdefault((obj["user_id"], obj["business_id"]), set()).add(stamp)
    for user, business, stamp in inter[["user_id:token", "item_id:token", "timestamp:float"]].values:
        assert int(stamp) in raw_stamps[(user, business)]


def test_shipped_amazon_sample_matches_its_raw_files(tmp_path):
    run("amazon", f"{RAW}/reviews_Beauty_5.json.gz", f"{RAW}/meta_Beauty.json.gz", tmp_path, name="amazon-sample")
    for suffix in ("inter", "item", "review"):
        with (
            open(tmp_path / "amazon-sample" / f"amazon-sample.{suffix}", "rb") as fresh,
            open(os.path.join(ROOT, "dataset", "amazon-sample", f"amazon-sample.{suffix}"), "rb") as shipped,
        ):
            assert fresh.read() == shipped.read(), f"dataset/amazon-sample is stale ({suffix}); regenerate it"


def test_recbole_loads_converted_dataset(tmp_path, monkeypatch):
    from recbole.config import Config
    from recbole.data import create_dataset

    import recbole_cllm4rec  # noqa: F401  (applies the RecBole compatibility patches)
    from recbole_cllm4rec.evaluator import register_metrics

    register_metrics()  # the yaml lists TRecall
    run("amazon", f"{RAW}/reviews_Beauty_5.json.gz", f"{RAW}/meta_Beauty.json.gz", tmp_path, name="beauty")
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    config = Config(
        model="Pop",
        dataset="beauty",
        config_file_list=[os.path.join(ROOT, "properties/dataset/amazon-sample.yaml")],
        config_dict={"data_path": str(tmp_path), "state": "WARNING"},
    )
    dataset = create_dataset(config)
    inter, item, reviews = load(tmp_path, "beauty")
    assert dataset.user_num - 1 == inter["user_id:token"].nunique()
    assert dataset.item_num - 1 == item["item_id:token"].nunique()
    assert dataset.inter_num == len(inter)
    # Text fields come back verbatim through RecBole's token vocabulary.
    first = item.iloc[0]
    iid = dataset.token2id("item_id", first["item_id:token"])
    title_id = int(dataset.item_feat["title"][iid])  # a DataFrame until data_preparation; NaN made it float
    assert dataset.id2token("title", title_id) == (first["title:token"] or "[PAD]")
    assert read_reviews(config["data_path"], "beauty") == reviews


# ----------------------------------------------------------------------------- filtering rules


def test_kcore_iterates_until_stable():
    # k=2. Users 0 and 1 both review items 0 and 1 (a stable core). A chain hangs off it:
    # user 2 -> items 0, 2; user 3 -> items 2, 3; user 4 -> item 3. Dropping user 4 leaves item 3
    # with one review, then user 3, item 2, user 2 fall in turn: five rounds, one row each.
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    items = np.array([0, 1, 0, 1, 0, 2, 2, 3, 3])
    keep = kcore(users, items, np.ones(len(users), dtype=bool), 2)
    assert keep.tolist() == [True] * 4 + [False] * 5


def test_kcore_matches_brute_force_on_random_data():
    rng = np.random.default_rng(7)
    users = rng.integers(0, 60, 900)
    items = (rng.pareto(1.2, 900) * 5).astype(int) % 80
    keep = kcore(users, items, np.ones(len(users), dtype=bool), 5)
    rows = set(range(len(users)))
    while True:  # reference: drop one offending row at a time
        uc, ic = Counter(users[list(rows)]), Counter(items[list(rows)])
        bad = {r for r in rows if uc[users[r]] < 5 or ic[items[r]] < 5}
        if not bad:
            break
        rows -= bad
    assert set(np.flatnonzero(keep)) == rows and rows


def test_rating_threshold_is_inclusive(tmp_path):
    lines = grid(5, 5, rating=5.0)
    lines += [amazon_line(f"U{u}", "LOW", r) for u, r in zip(range(5), [3.0, 3.5, 3.99, 2.0, 1.0])]
    lines += [amazon_line(f"U{u}", "EDGE", 4.0) for u in range(5)]
    src = write_lines(tmp_path / "r.json", lines)
    summary = run("amazon", src, None, tmp_path / "out")
    inter, _, _ = load(tmp_path / "out")
    assert "EDGE" in set(inter["item_id:token"]) and "LOW" not in set(inter["item_id:token"])
    assert summary["counts"]["below_min_rating"] == 5
    run("amazon", src, None, tmp_path / "all", min_rating=0)
    assert "LOW" in set(load(tmp_path / "all")[0]["item_id:token"])


def test_repeated_pair_keeps_latest_review(tmp_path):
    lines = grid(5, 5)
    lines.insert(0, amazon_line("U0", "I0", 5.0, 1_500_000_000, "newest"))
    lines.append(amazon_line("U0", "I0", 5.0, 1_300_000_000, "oldest"))
    src = write_lines(tmp_path / "r.json", lines)
    summary = run("amazon", src, None, tmp_path)
    inter, _, reviews = load(tmp_path)
    assert summary["counts"]["duplicates_removed"] == 2 and len(inter) == 25
    assert dict(((u, i), t) for u, i, t in reviews)[("U0", "I0")] == "newest"


def test_latest_per_pair_breaks_timestamp_ties_by_line_order():
    keep = latest_per_pair(np.array([0, 0, 1]), np.array([3, 3, 3]), np.array([5.0, 5.0, 1.0]))
    assert keep.tolist() == [False, True, True]


def test_nothing_survives_is_a_clear_error(tmp_path):
    src = write_lines(tmp_path / "r.json", grid(3, 3))
    with pytest.raises(ConversionError, match="lower --min-rating / --kcore"):
        run("amazon", src, None, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "ds")


# ----------------------------------------------------------------------------- text handling


def test_unicode_and_very_long_reviews_roundtrip(tmp_path):
    long_text = ('Ünïcödé 非常好 👍 "quoted"\ttab\nnewline \\ backslash \u2028 sep. ' * 2000)[:100_000]
    lines = grid(5, 5)
    lines[0] = amazon_line("U0", "I0", 5.0, text=long_text)
    lines[1] = amazon_line("U0", "I1", 5.0, text="\ud83d lone surrogate")
    meta = [json.dumps({"asin": "I0", "title": "x" * 5000, "brand": '"Acme"\tInc', "category": ["A", "B"]})]
    src = write_lines(tmp_path / "r.json.gz", lines, compress=True)
    run("amazon", src, write_lines(tmp_path / "m.json", meta), tmp_path / "out", max_item_chars=50)
    inter, item, _ = load(tmp_path / "out")
    texts = {(u, i): t for u, i, t in iter_reviews(tmp_path / "out" / "ds" / "ds.review")}
    assert texts[("U0", "I0")] == long_text and len(long_text) == 100_000
    assert texts[("U0", "I1")] == "\ud83d lone surrogate"
    row = item[item["item_id:token"] == "I0"].iloc[0]
    assert row["title:token"] == "x" * 50
    assert row["brand:token"] == "'Acme' Inc"


def test_clean_field():
    assert clean_field('"Best"\tbrush\n<b>set</b> &amp; case', 100) == "'Best' brush set & case"
    assert clean_field("alpha beta gamma delta", 12) == "alpha beta"  # cut at a word boundary
    assert clean_field("x" * 30, 10) == "x" * 10
    assert clean_field("nul\x00and\x1bescape\u2028sep", 100) == "nul and escape sep"


def test_malformed_lines_are_counted_and_skipped(tmp_path):
    bad = [
        "{not json",
        '{"reviewerID": "U9", "asin": "I9"}',
        amazon_line("U9", "I9", "five"),
        amazon_line("U\t9", "I9", 5.0),
        "[1, 2]",
        amazon_line("", "I9", 5.0),
        amazon_line("U9", "I9", 5.0, stamp=float("nan")),
    ]
    lines = grid(5, 5)
    for n, line in enumerate(bad):
        lines.insert(3 * n + 1, line)
    src = tmp_path / "r.json"
    write_lines(src, lines)
    with open(src, "ab") as f:
        f.write(b'{"reviewerID": "U1", "asin": "\xff\xfe", "overall": 5}\n\n   \n')  # bad UTF-8, blanks
    logged = []
    summary = run("amazon", src, None, tmp_path / "out", log=logged.append)
    assert summary["reviews_file"]["malformed"] == 8
    assert len(summary["reviews_file"]["malformed_examples"]) == convert.MAX_EXAMPLES
    assert summary["counts"]["interactions"] == 25
    assert any("skipped 8 malformed" in line for line in logged)


def test_truncated_gzip_fails_cleanly(tmp_path):
    src = write_lines(tmp_path / "r.json.gz", grid(6, 6), compress=True)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        run("amazon", src, None, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


# ----------------------------------------------------------------------------- atomic output


@pytest.fixture
def small_source(tmp_path):
    return write_lines(tmp_path / "r.json", grid(6, 6))


def _fail_mid_write(monkeypatch, exc):
    original = Converter._write_reviews

    def write_then_fail(text_path, path, *args):
        original(text_path, path, *args)
        assert os.path.getsize(path) > 0
        raise exc

    monkeypatch.setattr(Converter, "_write_reviews", staticmethod(write_then_fail))


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_nothing(tmp_path, small_source, monkeypatch, exc):
    _fail_mid_write(monkeypatch, exc)
    with pytest.raises(type(exc)):
        run("amazon", small_source, None, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_interrupted_overwrite_keeps_existing_dataset(tmp_path, small_source, monkeypatch):
    run("amazon", small_source, None, tmp_path / "out")
    before = {p: (tmp_path / "out" / "ds" / p).read_bytes() for p in os.listdir(tmp_path / "out" / "ds")}
    _fail_mid_write(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError):
        run("amazon", small_source, None, tmp_path / "out", overwrite=True, min_rating=0)
    assert os.listdir(tmp_path / "out") == ["ds"]
    assert {p: (tmp_path / "out" / "ds" / p).read_bytes() for p in os.listdir(tmp_path / "out" / "ds")} == before


def test_existing_dataset_needs_overwrite(tmp_path, small_source):
    run("amazon", small_source, None, tmp_path / "out")
    marker = tmp_path / "out" / "ds" / "keep.txt"
    marker.write_text("mine")
    with pytest.raises(ConversionError, match="--overwrite"):
        run("amazon", small_source, None, tmp_path / "out")
    assert marker.read_text() == "mine"
    run("amazon", small_source, None, tmp_path / "out", overwrite=True, kcore=2)
    assert not marker.exists() and sorted(os.listdir(tmp_path / "out")) == ["ds"]
    assert json.loads((tmp_path / "out" / "ds" / "ds.convert.json").read_text())["kcore"] == 2


def test_cli(tmp_path, small_source, capsys):
    args = [
        "amazon",
        "--reviews",
        str(small_source),
        "--name",
        "cli",
        "--output-dir",
        str(tmp_path),
        "--no-progress",
        "--kcore",
        "3",
    ]
    assert convert.main(args) == 0
    assert "Wrote" in capsys.readouterr().out
    assert convert.main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert convert.main(args + ["--overwrite", "--min-rating", "6"]) == 2
    assert "no interaction survives" in capsys.readouterr().err
    assert os.path.isfile(tmp_path / "cli" / "cli.inter")


# ----------------------------------------------------------------------------- side file reader


def test_read_reviews_paths_and_errors(tmp_path, small_source):
    run("amazon", small_source, None, tmp_path)
    folder = tmp_path / "ds"
    direct = read_reviews(str(folder), "ds")  # RecBole's config["data_path"] form
    assert direct == read_reviews(str(tmp_path), "ds") and len(direct) == 36
    assert read_reviews(str(tmp_path), "missing") is None
    shutil.copy(folder / "ds.review", tmp_path / "bad.review")
    with open(tmp_path / "bad.review", "a") as f:
        f.write('{"user_id": "U1", "item_id": 3, "review": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.review, line 37: .*Regenerate"):
        read_reviews(str(tmp_path), "bad")
