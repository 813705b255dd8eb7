"""Write the synthetic raw samples under dataset/samples/raw/ (deterministic: same bytes every run).

The users, items and texts are invented; only the file layouts copy the public dumps:
Amazon 2014 (reviews JSON lines + metadata as Python-literal dicts, gzipped), Amazon 2018
(JSON lines, plain here to exercise the non-gzip path) and the Yelp open dataset.

Each sample mixes a dense core (about 40 users x 40 items that survive rating >= 4 and the
5-core filter) with fringe users and items that the filter must remove, a repeated review,
one malformed line per file, and texts with tabs, newlines, quotes, HTML entities and unicode.

    python dataset/samples/make_samples.py            # rewrite dataset/samples/raw/
    python -m recbole_cllm4rec.data.convert amazon --reviews dataset/samples/raw/reviews_Beauty_5.json.gz \\
        --meta dataset/samples/raw/meta_Beauty.json.gz --name amazon-sample --output-dir dataset --overwrite
"""

import gzip
import json
import os
import random
import string
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, "raw")
SEED = 98765

ADJECTIVES = ["gentle", "sturdy", "fragrant", "bright", "compact", "reliable", "soft", "durable",
              "lightweight", "colourful", "smooth", "rich", "quick", "pleasant", "solid"]
NOUNS = ["cleanser", "brush", "puzzle", "racket", "lotion", "kit", "ball", "serum", "game",
         "bottle", "glove", "mask", "set", "shampoo", "board"]
OPINIONS = ["I use it every day and it still works like new.", "Arrived quickly and well packed.",
            "My daughter loves it.", "Does exactly what the description says.",
            "A bit pricey, but worth it.", "The colour is slightly different from the photo.",
            "Would buy again without hesitation.", "It broke after two weeks.",
            "Not what I expected at all.", "Great value for the money."]
SPECIAL_TEXTS = [
    '"Best purchase this year" is what I told my sister.\tSeriously.\nFive stars.',
    "Très bon produit, livré rapidement. 非常好用！ Отличный товар 👍",
    "Line one\r\nline two with a backslash \\ and a tab\there.",
]
CATEGORY_TREE = {
    "Beauty": ["Skin Care", "Hair Care", "Makeup", "Tools & Accessories"],
    "Toys & Games": ["Puzzles", "Board Games", "Learning & Education"],
    "Restaurants": ["Pizza", "Coffee & Tea", "Italian", "Bakeries"],
}


def _id(rng, prefix, length, alphabet=string.ascii_uppercase + string.digits):
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


def _sentence(rng, item_name):
    return f"This {item_name} is {rng.choice(ADJECTIVES)}. " + " ".join(rng.sample(OPINIONS, 2))


def make_interactions(rng, user_ids, item_ids):
    """(user, item, rating, unix time, text, summary) rows: a dense core plus fringe rows."""
    n_core_users, n_core_items = 42, 44
    core_users, fringe_users = user_ids[:n_core_users], user_ids[n_core_users:]
    core_items, fringe_items = item_ids[:n_core_items], item_ids[n_core_items:]
    weights = [1.0 / (1 + 0.08 * i) for i in range(n_core_items)]  # mild popularity skew
    rows = []
    for user in core_users:
        chosen, wanted = set(), rng.randint(9, 14)
        while len(chosen) < wanted:
            chosen.add(rng.choices(core_items, weights)[0])
        for item in sorted(chosen):
            rating = rng.choices([1, 2, 3, 4, 5], [0.05, 0.07, 0.13, 0.35, 0.40])[0]
            rows.append([user, item, float(rating), 1_300_000_000 + rng.randint(0, 10**8)])
    for user in fringe_users:  # too few reviews: the 5-core filter drops them
        for item in rng.sample(core_items, 2):
            rows.append([user, item, 5.0, 1_300_000_000 + rng.randint(0, 10**8)])
    for item in fringe_items:  # reviewed by a few core users only: dropped as well
        for user in rng.sample(core_users, 2):
            rows.append([user, item, 4.0, 1_300_000_000 + rng.randint(0, 10**8)])
    rng.shuffle(rows)
    names = {item: f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}" for item in item_ids}
    out = []
    for i, (user, item, rating, stamp) in enumerate(rows):
        text = SPECIAL_TEXTS[i % 3] if i < 3 else _sentence(rng, names[item])
        out.append((user, item, rating, stamp, text, rng.choice(OPINIONS)[:40]))
    # The same user reviewing the same item again, later and with a new opinion.
    user, item, _, stamp, _, summary = out[5]
    out.append((user, item, 5.0, stamp + 86400, "Second review: even better than I thought.", summary))
    # A review with no body, whose summary is the only text.
    user, item, rating, stamp, _, summary = out[6]
    out[6] = (user, item, rating, stamp, "", summary)
    return out, names


def _review_time(stamp):
    t = time.gmtime(stamp)
    return f"{t.tm_mon:02d} {t.tm_mday}, {t.tm_year}"


def amazon_review(row, rng, year):
    user, item, rating, stamp, text, summary = row
    obj = {"reviewerID": user, "asin": item, "reviewerName": f"Customer {user[-4:]}",
           "helpful": [rng.randint(0, 3), rng.randint(3, 6)], "reviewText": text,
           "overall": rating, "summary": summary, "unixReviewTime": stamp,
           "reviewTime": _review_time(stamp)}
    if year == 2018:
        del obj["helpful"]
        obj.update(verified=rng.random() < 0.8, style={"Size:": " 7.0 oz"})
        if not text:
            del obj["reviewText"]  # 2018 omits the key instead of leaving it empty
    return obj


def amazon_meta(item, name, rng, year, category):
    sub = rng.choice(CATEGORY_TREE[category])
    title = f"{name.title()} &amp; Travel Case, {rng.randint(2, 12)} pcs"
    if year == 2014:
        return {"asin": item, "title": title, "price": round(rng.uniform(3, 60), 2),
                "imUrl": f"http://ecx.images-amazon.com/images/I/{item}.jpg",
                "related": {"also_bought": [item[::-1]]}, "salesRank": {category: rng.randint(1, 10**5)},
                "brand": rng.choice(["Acme", "Lumière", "", "Northwind"]),
                "categories": [[category, sub], [category, "Gift Sets"]],
                "description": f"A {name} for\teveryday use.\n<br>Made with care."}
    return {"category": [category, sub], "tech1": "", "fit": "",
            "description": [f"A {name} for everyday use.", '<b>"Quoted"</b> features'],
            "title": title, "also_buy": [item[::-1]], "brand": rng.choice(["Acme", "Lumière", "Northwind"]),
            "feature": ["Safe materials"], "rank": f"{rng.randint(1, 10**5):,} in {category} (",
            "main_cat": category, "price": f"${rng.uniform(3, 60):.2f}", "asin": item}


def yelp_review(row, rng):
    user, item, rating, stamp, text, _ = row
    return {"review_id": _id(rng, "", 22, string.ascii_letters + string.digits + "-_"),
            "user_id": user, "business_id": item, "stars": rating, "useful": rng.randint(0, 4),
            "funny": 0, "cool": rng.randint(0, 2), "text": text,
            "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))}


def yelp_business(item, name, rng):
    return {"business_id": item, "name": f"The {name.title()} Café", "address": "1 Main St",
            "city": rng.choice(["Phoenix", "Las Vegas", "Montréal"]), "state": rng.choice(["AZ", "NV", "QC"]),
            "postal_code": "85001", "latitude": 33.45, "longitude": -112.07, "stars": 4.0,
            "review_count": 12, "is_open": 1, "attributes": {"WiFi": "u'free'"},
            "categories": f"Restaurants, {rng.choice(CATEGORY_TREE['Restaurants'])}", "hours": None}


def _write(path, lines):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.endswith(".gz"):
        # mtime=0 and no file name in the header keep the bytes identical between runs.
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _with_malformed(lines, rng, bad_line):
    lines.insert(rng.randint(1, len(lines) - 1), bad_line)
    return lines


def make_amazon(rng, year, category, reviews_name, meta_name):
    users = [_id(rng, "A", 13) for _ in range(50)]
    items = [_id(rng, "B00", 7) for _ in range(49)]
    rows, names = make_interactions(rng, users, items)
    reviews = [json.dumps(amazon_review(r, rng, year)) for r in rows]
    _write(os.path.join(RAW, reviews_name),
           _with_malformed(reviews, rng, '{"reviewerID": "A0TRUNCATED", "asin": "B00'))
    # Metadata for every item but one, plus one item nobody reviewed.
    extra = _id(rng, "B00", 7)
    metas = [amazon_meta(i, names.get(i, "spare part"), rng, year, category) for i in items[1:] + [extra]]
    # 2014 metadata is Python repr (single quotes), 2018 is JSON.
    meta_lines = [repr(m) if year == 2014 else json.dumps(m) for m in metas]
    _write(os.path.join(RAW, meta_name), _with_malformed(meta_lines, rng, "{'asin': 'B00BROKEN', 'title': "))


def make_yelp(rng):
    alphabet = string.ascii_letters + string.digits + "-_"
    users = [_id(rng, "", 22, alphabet) for _ in range(50)]
    items = [_id(rng, "", 22, alphabet) for _ in range(49)]
    rows, names = make_interactions(rng, users, items)
    reviews = [json.dumps(yelp_review(r, rng)) for r in rows]
    _write(os.path.join(RAW, "review.json"), _with_malformed(reviews, rng, '{"user_id": 42, "stars": "x"}'))
    business = [json.dumps(yelp_business(i, names[i], rng)) for i in items]
    _write(os.path.join(RAW, "business.json"), _with_malformed(business, rng, "not json at all"))


def main():
    os.makedirs(RAW, exist_ok=True)
    rng = random.Random(SEED)
    make_amazon(rng, 2014, "Beauty", "reviews_Beauty_5.json.gz", "meta_Beauty.json.gz")
    make_amazon(rng, 2018, "Toys & Games", "Toys_and_Games_5.json", "meta_Toys_and_Games.json")
    make_yelp(rng)
    print(f"wrote samples to {RAW}")


if __name__ == "__main__":
    main()
