"""Convert raw public review dumps into RecBole atomic files that keep the review text.

Usage::

    python -m recbole_cllm4rec.data.convert amazon --reviews reviews_Beauty_5.json.gz \\
        --meta meta_Beauty.json.gz --name amazon-beauty --output-dir dataset/
    python -m recbole_cllm4rec.data.convert yelp --reviews review.json \\
        --business business.json --name yelp --output-dir dataset/

Supported inputs (gzip or plain text, detected from the file's first bytes):

* Amazon 2014 (jmcauley.ucsd.edu/data/amazon/): ``reviews_<Category>_5.json.gz`` (JSON lines) and
  ``meta_<Category>.json.gz`` (one Python-literal dict per line, read with ``ast.literal_eval``).
* Amazon 2018 (nijianmo.github.io/amazon/): ``<Category>_5.json.gz`` and ``meta_<Category>.json.gz``,
  both JSON lines; ``category`` and ``description`` are lists there.
* Yelp open dataset: ``yelp_academic_dataset_review.json`` and ``..._business.json``.

Protocol (CLLM4Rec, following Multi-VAE): keep reviews whose rating is >= ``--min-rating``
(default 4, i.e. the paper's "rating > 3" on integer stars), keep one review per (user, item)
pair (the most recent), then drop users and items with fewer than ``--kcore`` interactions,
repeating until every remaining user and item has at least k.

Output, in ``<output-dir>/<name>/``:

* ``<name>.inter``: ``user_id:token item_id:token rating:float timestamp:float``.
* ``<name>.item``: ``item_id:token`` plus short text fields stored as ``token``. RecBole keeps each
  token vocabulary as a fixed-width numpy unicode array (4 bytes x longest value x distinct values),
  so every text field is cut to ``--max-item-chars`` characters; tabs, newlines and double quotes
  are replaced because RecBole's ``read_csv(engine="python")`` cannot read them unquoted.
* ``<name>.review``: JSON lines ``{"user_id": ..., "item_id": ..., "review": ...}``, one per
  interaction with a non-empty text, keyed by the same raw tokens as ``.inter``. The text is the
  raw review, uncleaned and untruncated. Read it with :func:`recbole_cllm4rec.data.reviews.read_reviews`.
* ``<name>.convert.json``: the options and counts of the conversion.

Memory stays bounded by the number of kept interactions: a review is reduced to integer user and
item indices, its rating and timestamp as soon as it is read, and its text goes to a temporary
side file that a second pass filters. Everything is written into a hidden folder next to the
destination and renamed into place only once complete.
"""

import argparse
import ast
import gzip
import html
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import zlib
from array import array
from datetime import datetime, timezone

import numpy as np

# Errors a malformed line can raise while being parsed; anything else is a bug and propagates.
LINE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, SyntaxError, RecursionError, MemoryError)
MAX_EXAMPLES = 5
CHUNK_BYTES = 1 << 22

_ASIN_RE = re.compile(rb"""["']asin["']\s*:\s*["']([^"']+)["']""")
_BUSINESS_RE = re.compile(rb"""["']business_id["']\s*:\s*["']([^"']+)["']""")
_TAG_RE = re.compile(r"<[^>]{0,200}>")
_SPACE_RE = re.compile(r"[\s\x00-\x1f\x7f]+")  # control characters too: pandas chokes on NUL
# Bound methods of reusable codec objects: json.loads/json.dumps rebuild or re-check them per call.
_json_decode = json.JSONDecoder().decode
_json_encode = json.JSONEncoder(ensure_ascii=False).encode


class ConversionError(RuntimeError):
    """A problem that stops the conversion (as opposed to a malformed line, which is skipped)."""


class FileStats:
    """Counts for one input file, printed in the final summary."""

    def __init__(self, path):
        self.path = path
        self.lines = 0
        self.malformed = 0
        self.examples = []

    def bad_line(self, lineno, reason):
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {lineno}: {reason}")

    def as_dict(self):
        return {
            "file": os.path.basename(self.path),
            "lines": self.lines,
            "malformed": self.malformed,
            "malformed_examples": self.examples,
        }


# ----------------------------------------------------------------------------- reading


def _open_binary(path):
    """Open ``path`` for binary reading; return (decompressed stream, raw file for tell())."""
    raw = open(path, "rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _chunks(stream, raw, bar):
    done = 0
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if bar is not None:
            pos = raw.tell()
            bar.update(pos - done)
            done = pos
        if not chunk:
            return
        yield chunk


def iter_lines(path, stats, progress=True, desc=None):
    """Yield ``(line_number, bytes)`` for every non-blank line, with a byte-based progress bar.

    Reads large blocks and splits them in C: per-line ``readline`` on a gzip stream cost more
    than the JSON parsing of the line.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"input file not found: {path}")
    stream, raw = _open_binary(path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=os.path.getsize(path), unit="B", unit_scale=True, desc=desc or os.path.basename(path), file=sys.stderr
        )
    lineno, tail = 0, b""
    try:
        for chunk in _chunks(stream, raw, bar):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()  # the unfinished last line continues in the next block
            for line in lines:
                lineno += 1
                if line.strip():
                    yield lineno, line
            stats.lines = lineno
        if tail.strip():
            lineno += 1
            yield lineno, tail
        stats.lines = lineno
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ConversionError(
            f"{path} is truncated or not a valid gzip file after line {stats.lines} ({exc}); download it again"
        ) from exc
    finally:
        if bar is not None:
            bar.close()
        stream.close()
        raw.close()


def _parse_object(line):
    """A JSON object, or a Python-literal dict as in the Amazon 2014 metadata."""
    try:
        obj = json.loads(line)
    except ValueError:
        obj = ast.literal_eval(line.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got {type(obj).__name__}")
    return obj


def _token(obj, key):
    value = obj[key]
    if not isinstance(value, str) or not value or "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{key} must be a non-empty string without tabs or newlines, got {value!r}")
    if not value.isascii():
        value.encode("utf-8")  # a lone surrogate from a JSON escape cannot be written out
    return value


def _number(obj, key):
    value = float(obj[key])
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {obj[key]!r}")
    return value


def _text(value):
    return value if isinstance(value, str) else ""


def parse_amazon_review(line):
    obj = _json_decode(line.decode("utf-8"))
    # Some reviews have no body; the one-line summary is the only text they carry.
    text = _text(obj.get("reviewText")) or _text(obj.get("summary"))
    return (
        _token(obj, "reviewerID"),
        _token(obj, "asin"),
        _number(obj, "overall"),
        _number(obj, "unixReviewTime"),
        text,
    )


def parse_yelp_review(line):
    obj = _json_decode(line.decode("utf-8"))
    stamp = datetime.fromisoformat(obj["date"]).replace(tzinfo=timezone.utc).timestamp()
    return (_token(obj, "user_id"), _token(obj, "business_id"), _number(obj, "stars"), stamp, _text(obj.get("text")))


def _flatten(value):
    """Strings from a string, a list of strings, or a list of lists (2014 ``categories``)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _flatten(v)]
    return []


def _unique_join(values, sep):
    seen = dict.fromkeys(v.strip() for v in values)
    return sep.join(v for v in seen if v)


def parse_amazon_meta(line):
    obj = _parse_object(line)
    categories = obj.get("categories", obj.get("category"))
    return _token(obj, "asin"), {
        "title": _text(obj.get("title")),
        "brand": _text(obj.get("brand")),
        "categories": _unique_join(_flatten(categories), ", "),
        "description": " ".join(_flatten(obj.get("description"))),
    }


def parse_yelp_business(line):
    obj = json.loads(line)
    return _token(obj, "business_id"), {
        "name": _text(obj.get("name")),
        "categories": _text(obj.get("categories")),
        "city": _text(obj.get("city")),
        "state": _text(obj.get("state")),
    }


class Source:
    """How to read one raw format: a review parser plus an item-metadata parser and its fields."""

    def __init__(self, kind, review_parser, meta_parser, meta_id_re, item_fields):
        self.kind = kind
        self.review_parser = review_parser
        self.meta_parser = meta_parser
        self.meta_id_re = meta_id_re
        self.item_fields = item_fields


SOURCES = {
    "amazon": Source(
        "amazon", parse_amazon_review, parse_amazon_meta, _ASIN_RE, ("title", "brand", "categories", "description")
    ),
    "yelp": Source(
        "yelp", parse_yelp_review, parse_yelp_business, _BUSINESS_RE, ("name", "categories", "city", "state")
    ),
}


# ----------------------------------------------------------------------------- filtering


def latest_per_pair(users, items, stamps):
    """Boolean mask keeping, for each (user, item) pair, its most recent row (later line on ties)."""
    n = len(users)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    key = users.astype(np.int64) * (int(items.max()) + 1) + items
    order = np.lexsort((np.arange(n), stamps, key))
    last_of_group = np.ones(n, dtype=bool)
    last_of_group[:-1] = key[order][1:] != key[order][:-1]
    keep[order[last_of_group]] = True
    return keep


def kcore(users, items, keep, k):
    """Drop rows until every user and item left in ``keep`` has at least ``k`` rows (in place)."""
    if k <= 1:
        return keep
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        drop = keep & ((user_count[users] < k) | (item_count[items] < k))
        if not drop.any():
            return keep
        keep &= ~drop


# ----------------------------------------------------------------------------- writing


def clean_field(value, max_chars):
    """One-line, quote-free, bounded text that RecBole's tab-separated reader parses verbatim."""
    value = _TAG_RE.sub(" ", html.unescape(value)).replace('"', "'")
    value = _SPACE_RE.sub(" ", value).strip()
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")  # drop lone surrogates
    if len(value) > max_chars:
        cut = value.rfind(" ", 0, max_chars + 1)
        value = value[: cut if cut > max_chars // 2 else max_chars].rstrip()
    return value


_OWNER_FILE = ".owner"  # "<pid> <host>" of the conversion filling a .partial- folder


def _owner_alive(folder):
    """Whether the conversion that owns a ``.partial-`` folder may still be running."""
    try:
        with open(os.path.join(folder, _OWNER_FILE), encoding="utf-8") as f:
            pid, host = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # no owner recorded: left by a killed run (or by a version without owners)
    if host != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_dir(tmp_dir, dest, overwrite):
    """Move the finished ``tmp_dir`` to ``dest``; an old ``dest`` goes only once the new one is in."""
    if not os.path.exists(dest):
        os.rename(tmp_dir, dest)
        return
    if not overwrite:
        raise ConversionError(f"{dest} already exists; pass --overwrite to replace it")
    old = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.old-")
    os.rmdir(old)
    os.rename(dest, old)
    try:
        os.rename(tmp_dir, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


class Converter:
    """One conversion run. ``convert()`` is the entry point; see the module docstring."""

    def __init__(
        self,
        source,
        reviews,
        meta,
        output_dir,
        name,
        min_rating=4.0,
        kcore=5,
        max_item_chars=300,
        overwrite=False,
        progress=True,
        log=print,
    ):
        self.source = SOURCES[source] if isinstance(source, str) else source
        self.reviews = reviews
        self.meta = meta
        self.output_dir = output_dir
        self.name = name
        self.min_rating = min_rating
        self.k = kcore
        self.max_item_chars = max_item_chars
        self.overwrite = overwrite
        self.progress = progress
        self.log = log
        self.summary = {}

    @property
    def dest(self):
        return os.path.join(self.output_dir, self.name)

    def convert(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConversionError(f"dataset name {self.name!r} must be letters, digits, '.', '_' or '-'")
        if os.path.exists(self.dest) and not self.overwrite:
            raise ConversionError(f"{self.dest} already exists; pass --overwrite to replace it")
        os.makedirs(self.output_dir, exist_ok=True)
        self._remove_stale_partials()
        tmp_dir = tempfile.mkdtemp(dir=self.output_dir, prefix=f".{self.name}.partial-")
        owner = os.path.join(tmp_dir, _OWNER_FILE)
        try:
            with open(owner, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self._convert_into(tmp_dir)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp made it owner-only; use the usual mode
            _replace_dir(tmp_dir, self.dest, self.overwrite)
            # only once moved: a .partial- folder without an owner counts as stale to a concurrent conversion
            os.remove(os.path.join(self.dest, _OWNER_FILE))
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        self._print_summary()
        return self.summary

    def _remove_stale_partials(self):
        """A killed conversion leaves its ``.<name>.partial-*`` folder (16-32 MB) behind; the next
        conversion of that name removes those whose process is gone (and ``.<name>.old-*``
        folders of a finished replacement)."""
        removed = []
        for entry in os.listdir(self.output_dir):
            path = os.path.join(self.output_dir, entry)
            if not os.path.isdir(path):
                continue
            if entry.startswith(f".{self.name}.partial-") and not _owner_alive(path):
                removed.append(entry)
            elif entry.startswith(f".{self.name}.old-") and os.path.exists(self.dest):
                removed.append(entry)
            else:
                continue
            shutil.rmtree(path, ignore_errors=True)
        if removed:
            self.log(
                f"removed {len(removed)} unfinished folder(s) of earlier killed conversions of "
                f"{self.name} in {self.output_dir}: {', '.join(sorted(removed))}"
            )

    def _path(self, folder, suffix):
        return os.path.join(folder, f"{self.name}.{suffix}")

    def _convert_into(self, folder):
        text_path = os.path.join(folder, "texts.pass1")
        users, items, ratings, stamps, user_tokens, item_tokens, counts = self._read_reviews(text_path)
        keep = latest_per_pair(users, items, stamps)
        counts["duplicates_removed"] = int(len(keep) - keep.sum())
        before = int(keep.sum())
        kcore(users, items, keep, self.k)
        counts["kcore_removed"] = before - int(keep.sum())
        if not keep.any():
            raise ConversionError(
                f"no interaction survives rating >= {self.min_rating} and the {self.k}-core filter; "
                "check the input files or lower --min-rating / --kcore"
            )

        kept_items = np.unique(items[keep])
        wanted = {item_tokens[i]: i for i in kept_items}
        meta = self._read_meta(wanted, counts) if self.meta else {}
        self._write_inter(self._path(folder, "inter"), keep, users, items, ratings, stamps, user_tokens, item_tokens)
        self._write_item(self._path(folder, "item"), items[keep], item_tokens, meta, counts)
        counts["reviews_written"] = self._write_reviews(
            text_path, self._path(folder, "review"), keep, users, items, user_tokens, item_tokens
        )
        os.remove(text_path)

        counts.update(users=len(np.unique(users[keep])), items=len(kept_items), interactions=int(keep.sum()))
        self.summary.update(
            dataset=self.name,
            format=self.source.kind,
            min_rating=self.min_rating,
            kcore=self.k,
            max_item_chars=self.max_item_chars,
            counts=counts,
        )
        with open(self._path(folder, "convert.json"), "w", encoding="utf-8") as f:
            json.dump(self.summary, f, indent=2)

    def _read_reviews(self, text_path):
        """Pass 1: compact arrays for rows with rating >= min_rating; their texts go to ``text_path``."""
        stats = FileStats(self.reviews)
        user_ids, item_ids = {}, {}
        users, items, ratings, stamps = array("i"), array("i"), array("f"), array("d")
        below = 0
        parse = self.source.review_parser
        with open(text_path, "w", encoding="utf-8") as texts:
            for lineno, line in iter_lines(self.reviews, stats, self.progress, "reviews"):
                try:
                    user, item, rating, stamp, text = parse(line)
                except LINE_ERRORS as exc:
                    stats.bad_line(lineno, f"{type(exc).__name__}: {exc}"[:200])
                    continue
                if rating < self.min_rating:
                    below += 1
                    continue
                users.append(user_ids.setdefault(user, len(user_ids)))
                items.append(item_ids.setdefault(item, len(item_ids)))
                ratings.append(rating)
                stamps.append(stamp)
                try:
                    texts.write(_json_encode(text))
                except UnicodeEncodeError:
                    # Lone surrogates (from "\\ud83d"-style escapes) stay escaped, as valid JSON.
                    texts.write(json.dumps(text))
                texts.write("\n")
        self.summary["reviews_file"] = stats.as_dict()
        counts = {"below_min_rating": below, "read": len(users)}
        # Index -> token tables; the dicts are dropped so only one copy of each token stays alive.
        user_tokens, item_tokens = list(user_ids), list(item_ids)
        del user_ids, item_ids
        return (
            np.frombuffer(users, dtype=np.int32),
            np.frombuffer(items, dtype=np.int32),
            np.frombuffer(ratings, dtype=np.float32),
            np.frombuffer(stamps, dtype=np.float64),
            user_tokens,
            item_tokens,
            counts,
        )

    def _read_meta(self, wanted, counts):
        """Item fields for the kept items only; the first record of an item wins."""
        stats = FileStats(self.meta)
        found = {}
        for lineno, line in iter_lines(self.meta, stats, self.progress, "metadata"):
            # Most metadata lines describe items the filters dropped: skip them before parsing.
            match = self.source.meta_id_re.search(line)
            if match is not None:
                try:
                    token = match.group(1).decode("utf-8")
                except UnicodeDecodeError:
                    token = None
                if token not in wanted or token in found:
                    continue
            try:
                token, fields = self.source.meta_parser(line)
            except LINE_ERRORS as exc:
                stats.bad_line(lineno, f"{type(exc).__name__}: {exc}"[:200])
                continue
            if token in wanted and token not in found:
                found[token] = {k: clean_field(v, self.max_item_chars) for k, v in fields.items()}
        self.summary["meta_file"] = stats.as_dict()
        counts["items_without_metadata"] = len(wanted) - len(found)
        return found

    @staticmethod
    def _write_inter(path, keep, users, items, ratings, stamps, user_tokens, item_tokens):
        with open(path, "w", encoding="utf-8") as f:
            f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            for row in np.flatnonzero(keep):
                f.write(
                    f"{user_tokens[users[row]]}\t{item_tokens[items[row]]}\t"
                    f"{float(ratings[row]):g}\t{int(stamps[row])}\n"
                )

    def _write_item(self, path, kept_item_rows, item_tokens, meta, counts):
        fields = self.source.item_fields
        # Items in order of first appearance in .inter, so the file diffs cleanly between runs.
        _, first = np.unique(kept_item_rows, return_index=True)
        order = kept_item_rows[np.sort(first)]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\t".join(["item_id:token"] + [f"{name}:token" for name in fields]) + "\n")
            for item in order:
                token = item_tokens[item]
                values = meta.get(token, {})
                f.write("\t".join([token] + [values.get(name, "") for name in fields]) + "\n")

    @staticmethod
    def _write_reviews(text_path, path, keep, users, items, user_tokens, item_tokens):
        """Pass 2: copy the texts of the kept rows, already JSON-encoded in pass 1."""
        written = 0
        with open(text_path, encoding="utf-8") as texts, open(path, "w", encoding="utf-8") as out:
            for row, encoded in enumerate(texts):
                if not keep[row] or encoded == '""\n':
                    continue
                user = _json_encode(user_tokens[users[row]])
                item = _json_encode(item_tokens[items[row]])
                out.write(f'{{"user_id": {user}, "item_id": {item}, "review": {encoded[:-1]}}}\n')
                written += 1
        return written

    def _print_summary(self):
        counts = self.summary["counts"]
        self.log(
            f"Wrote {self.dest}: {counts['users']} users, {counts['items']} items, "
            f"{counts['interactions']} interactions, {counts['reviews_written']} reviews."
        )
        self.log(
            f"  kept rating >= {self.min_rating:g}: {counts['below_min_rating']} reviews below it; "
            f"{counts['duplicates_removed']} repeated (user, item) reviews dropped; "
            f"{counts['kcore_removed']} interactions removed by the {self.k}-core filter."
        )
        if "items_without_metadata" in counts:
            self.log(f"  {counts['items_without_metadata']} kept items have no metadata record.")
        for key in ("reviews_file", "meta_file"):
            stats = self.summary.get(key)
            if stats and stats["malformed"]:
                self.log(
                    f"  {stats['file']}: skipped {stats['malformed']} malformed of "
                    f"{stats['lines']} lines, e.g. " + "; ".join(stats["malformed_examples"])
                )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m recbole_cllm4rec.data.convert",
        description="Convert raw Amazon (2014/2018) or Yelp dumps to RecBole atomic files "
        "plus a <name>.review side file with the review texts.",
    )
    sub = parser.add_subparsers(dest="source", required=True)
    for kind, meta_flag, meta_help in (
        ("amazon", "--meta", "meta_<Category>.json[.gz] (2014 Python-literal or 2018 JSON lines)"),
        ("yelp", "--business", "yelp_academic_dataset_business.json"),
    ):
        p = sub.add_parser(kind, help=f"convert the {kind} review dump")
        p.add_argument("--reviews", required=True, help="review file, JSON lines, gzip or plain")
        p.add_argument(meta_flag, dest="meta", default=None, help=f"item metadata: {meta_help}")
        p.add_argument("--name", required=True, help="dataset name (RecBole's `dataset`)")
        p.add_argument("--output-dir", default="dataset", help="folder that receives <name>/ (default: dataset)")
        p.add_argument(
            "--min-rating",
            type=float,
            default=4.0,
            help="keep reviews with rating >= this (default 4: the paper's 'rating > 3'); 0 keeps all",
        )
        p.add_argument(
            "--kcore",
            type=int,
            default=5,
            help="iterate until every user and item has >= k interactions (default 5; 0 disables)",
        )
        p.add_argument(
            "--max-item-chars",
            type=int,
            default=300,
            help="cut each .item text field to this many characters (default 300)",
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing <output-dir>/<name>")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    converter = Converter(
        args.source,
        args.reviews,
        args.meta,
        args.output_dir,
        args.name,
        min_rating=args.min_rating,
        kcore=args.kcore,
        max_item_chars=args.max_item_chars,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    try:
        converter.convert()
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
