"""Input checks that run once, before any training: config values (types, ranges, finiteness,
unknown keys, metrics), config files (no key twice, UTF-8), the process count and the GPU asked
for, atomic files (header, encoding, id columns, feature files that cover the interactions, what
RecBole's filters leave), and the split a dataset gives.

Every failure is an ``InputError`` (a ``ValueError``) whose message is one line saying what is
wrong and what to do; ``run_recbole.py`` prints it as ``error: ...`` and exits with code 2.

The type of each key comes from the ``# (type) meaning`` comment on its line in the property
files (this project's ``properties/`` first, then RecBole's); the known keys are every key of
those files, RecBole's own argument lists, and every ``config["key"]`` that RecBole's or this
package's code reads. Ranges are the short table ``RANGES`` below.
"""

import ast
import contextlib
import csv
import difflib
import functools
import glob
import math
import os
import re
import types

import yaml

from recbole_cllm4rec.properties import properties_dir

_COMMENT_TYPE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:(.*?)#\s*\(([^)]*)\)")
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:")
_CODE_KEY = re.compile(
    r"""config\s*(?:\[|\.get\(|\.final_config_dict\[)\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""
    r"""|["']([A-Za-z_][A-Za-z0-9_]*)["']\s+(?:not\s+)?in\s+(?:self\.)?config\b"""
)

# Keys that are not in any property file but are read through ``Config``: the launch settings
# ``run`` passes to each rank, and RecBole's own derived keys.
EXTRA_KEYS = {
    "local_rank",
    "world_size",
    "ip",
    "port",
    "nproc",
    "offset",
    "model",
    "dataset",
    "config_files",
    "encoding",
    "MODEL_TYPE",
    "MODEL_INPUT_TYPE",
    "eval_type",
    "device",
    "single_spec",
    "eval_neg_sample_args",
    "valid_neg_sample_args",
    "test_neg_sample_args",
}

# (minimum, minimum inclusive, maximum, maximum inclusive) per key; a suffix rule applies to
# every key ending with it unless the key has its own entry.
RANGES = {
    "seed": (0, True, 2**32 - 1, True),  # numpy's seed range: RecBole's init_seed fails outside it
    "epochs": (0, True, None, None),  # 0: evaluate without finetuning (RecBole allows it)
    "learning_rate": (0, False, None, None),
    "weight_decay": (0, True, None, None),
    "stopping_step": (0, True, None, None),  # eval_step <= 0 is RecBole's "never validate"
    "mask_ratio": (0, False, 1, True),
    "tau": (0, False, None, None),
    "n_negatives": (1, True, None, None),
    "n_layers": (0, True, None, None),
    "readout_layers": (0, True, None, None),  # its upper bound, the backbone's depth: at model build
    "lora_rank": (0, True, None, None),
    "lora_alpha": (0, False, None, None),
    "id_input_scale": (0, False, None, None),
    "masks_per_epoch": (1, True, None, None),
    "eval_prompt_draws": (1, True, None, None),
    "masked_target_weight": (0, False, None, None),
    "max_doc_items": (1, True, None, None),
    "eval_max_doc_items": (1, True, None, None),
    "max_text_tokens": (1, True, None, None),
    "text_max_length": (1, True, None, None),
    "max_batch_tokens": (1, True, None, None),
    "intention_alpha": (0, True, 1, True),
    "id_init_std": (0, True, None, None),
    "mr_weight": (0, True, None, None),
    "worker": (0, True, None, None),
    "metric_decimal_place": (0, True, None, None),
    "MAX_ITEM_LIST_LENGTH": (1, True, None, None),
    "cold_item_ratio": (0, True, 1, False),
    "cold_user_ratio": (0, True, 1, False),
    "cold_user_max_history": (0, True, None, None),
    "cold_item_max_history": (0, True, None, None),
    "text_prior_count": (0, True, None, None),
    "user_text_prior_count": (0, True, None, None),
}
SUFFIX_RANGES = {
    "batch_size": (1, True, None, None),
    "_epochs": (0, True, None, None),
    "_learning_rate": (0, False, None, None),
    # 2**16: above any language model's width; 10**9 made the first table a MemoryError or a hang
    "embedding_size": (1, True, 2**16, True),
    "dropout_prob": (0, True, 1, False),
}
CHOICES = {
    "readout": ("last", "mean"),
    "finetune_target": ("masked", "all"),
    "learning_rate_schedule": ("constant", "cosine"),
    "autocast": ("auto", "bf16", "fp32"),
    "llm_weights": ("pretrained", "random"),
    "text_pooling": ("auto", "mean", "cls", "max", "last"),
    "item_representation": ("language", "id"),
    "cold_item_rows": ("trained", "content", "content_map", "text_map"),
    "cold_user_states": ("trained", "text_map"),
    "content_init": ("random", "text"),
    "negative_items": ("all", "trained"),
    "softmax_items": ("all", "trained"),
    "learner": ("adam", "sgd", "adagrad", "rmsprop", "sparse_adam", "adamw"),
    "positive_sampling": ("interaction", "user"),
    "state": ("info", "debug", "warning", "error", "critical"),
}


# Types RecBole converts itself, whatever its comment says.
TYPE_OVERRIDES = {
    "gpu_id": "str or int or list of int",
    "additional_feat_suffix": "list or str",
    "metrics": "list or str",
    "topk": "list of int or int",
    # "[0,60]" or [0, 60]: RecBole parses str() of the value
    "user_inter_num_interval": "str or list of float",
    "item_inter_num_interval": "str or list of float",
}


class InputError(ValueError):
    """A mistake in the user's input, found before training; the message is one line."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class ConfigValueError(InputError):
    pass


class AtomicFileError(InputError):
    pass


class DatasetSplitError(InputError):
    pass


# Keys naming a file that must exist, with what to do instead; checked with the merged config.
FILE_KEYS = {
    "pretrained_file": "unset it to pretrain from scratch",
    "resume_file": "give a checkpoint a run saved (saved/<Model>-<stamp>.pth or its -last.pth)",
}


def existing_file(key, path):
    """``path``, the value of the file setting ``key`` (FILE_KEYS), exists."""
    if not os.path.isfile(path):
        raise ConfigValueError(f"{key} '{path}' does not exist; {FILE_KEYS[key]}")
    return path


def _recbole_dir():
    import recbole

    return os.path.dirname(os.path.abspath(recbole.__file__))


def _our_dirs():
    return properties_dir(), os.path.dirname(os.path.abspath(__file__))


def _yaml_files():
    ours, _ = _our_dirs()
    theirs = os.path.join(_recbole_dir(), "properties")
    downloads = ("url.yaml", "kg_url.yaml")  # dataset download addresses, not settings
    return (
        sorted(glob.glob(os.path.join(ours, "**", "*.yaml"), recursive=True)),
        sorted(
            p
            for p in glob.glob(os.path.join(theirs, "**", "*.yaml"), recursive=True)
            if os.path.basename(p) not in downloads
        ),
    )


def _scan_yaml(path):
    """``({key: type comment}, {key: default is None}, keys)`` of a property file's top level."""
    types, none_default, keys = {}, {}, set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            top = _TOP_KEY.match(line)
            if not top:
                continue
            keys.add(top.group(1))
            match = _COMMENT_TYPE.match(line)
            if match:
                key, value, kind = match.groups()
                kind = TYPE_OVERRIDES.get(key, kind.strip().lower())
                none_default[key] = value.strip() in ("~", "null", "None", "")
                try:
                    default = literal(yaml.safe_load(value)) if value.strip() else None
                except yaml.YAMLError:
                    default = None
                # A few of RecBole's comments contradict their own default (KGIN's ind is
                # "(float)" with 'cosine'): such a comment is not used.
                if default is None or _type_ok(default, kind):
                    types.setdefault(key, kind)
    return types, none_default, keys


@functools.cache
def _property_tables():
    """Types by file: ``{path: types}``, keys from every file, keys whose default is None."""
    ours, theirs = _yaml_files()
    by_file, keys, nullable = {}, set(), set()
    for path in ours + theirs:
        types, none_default, file_keys = _scan_yaml(path)
        by_file[path] = types
        keys |= file_keys
        nullable |= {k for k, v in none_default.items() if v}
    return by_file, keys, nullable


@functools.cache
def _code_keys():
    """Every key that RecBole's or this package's code reads from a Config."""
    keys = set()
    for root in (_recbole_dir(), _our_dirs()[1]):
        for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8", errors="replace") as f:
                for a, b in _CODE_KEY.findall(f.read()):
                    keys.add(a or b)
    from recbole.utils import argument_list

    for name in dir(argument_list):
        if name.endswith("_arguments"):
            keys.update(getattr(argument_list, name))
    return keys


def known_keys():
    return _property_tables()[1] | _code_keys() | EXTRA_KEYS


def key_types(model):
    """``{key: type comment}``: the model's own property files first, then the overall ones,
    then any other file (another model's meaning of a shared key)."""
    by_file, _, _ = _property_tables()
    ours_dir, _ = _our_dirs()
    theirs_dir = os.path.join(_recbole_dir(), "properties")
    first = [
        os.path.join(ours_dir, "model", f"{model}.yaml"),
        os.path.join(theirs_dir, "model", f"{model}.yaml"),
        os.path.join(ours_dir, "overall.yaml"),
        os.path.join(theirs_dir, "overall.yaml"),
        os.path.join(theirs_dir, "dataset", "sample.yaml"),
    ]
    types = {}
    for path in first:
        for key, kind in by_file.get(path, {}).items():
            types.setdefault(key, kind)
    others = {}
    for path, file_types in by_file.items():
        if path in first:
            continue
        for key, kind in file_types.items():
            if key not in types:
                others.setdefault(key, set()).add(kind)
    for key, kinds in others.items():
        types[key] = " or ".join(sorted(kinds))
    return types


def literal(value):
    """What a string from the command line or a config dict means: RecBole ``eval``s it
    (``Config._convert_config_dict``); this reads Python literals only, never code."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.lower()
        if lowered in ("true", "false"):  # as RecBole's conversion reads them
            return lowered == "true"
        return value
    if isinstance(parsed, (str, int, float, list, tuple, dict, bool)) or parsed is None:
        return parsed
    return value


def _is(value, kind):
    kind = kind.strip()
    if kind in ("none",):
        return value is None
    if kind.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind.startswith("float"):
        if isinstance(value, str):  # '1e-3': YAML 1.1 reads it as a string, RecBole's loader as a float
            try:
                float(value)
                return True
            except ValueError:
                return False
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind.startswith("bool"):
        return isinstance(value, bool)
    if kind.startswith(("str", "string")):  # RecBole formats numbers given for a name (gpu_id: 0)
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if kind.startswith("list"):
        if not isinstance(value, (list, tuple)):
            return False
        inner = kind[len("list") :].strip()
        if inner.startswith("of "):
            return all(_is(v, inner[3:]) for v in value)
        return True
    if kind.startswith("dict"):
        return isinstance(value, dict)
    return True  # a comment this checker does not read (e.g. "file name of ...")


def _type_ok(value, comment):
    alternatives = [k for k in re.split(r"\s+or\s+|,\s*", comment) if k and k != "optional"]
    return any(_is(value, k) for k in alternatives) if alternatives else True


def _finite(value):
    """False when ``value`` (or a number inside a list or dict) is nan or +-inf; a string counts
    by what ``float`` makes of it ('inf', 'nan', '1e999'), as RecBole's float keys read it."""
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return True  # not a number at all: the type check's business
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _range_for(key):
    if key in RANGES:
        return RANGES[key]
    for suffix, bounds in SUFFIX_RANGES.items():
        if key.endswith(suffix):
            return bounds
    return None


def _check_range(key, value, raw, where):
    bounds = _range_for(key)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, low_inclusive, high, high_inclusive = bounds
    if isinstance(value, float) and math.isnan(value):
        raise ConfigValueError(f"{where}{key}={_show(raw)} is not a number")
    bad = (low is not None and (value < low or (value == low and not low_inclusive))) or (
        high is not None and (value > high or (value == high and not high_inclusive))
    )
    if bad:
        left = "" if low is None else f"{'>=' if low_inclusive else '>'} {low}"
        right = "" if high is None else f"{'<=' if high_inclusive else '<'} {high}"
        raise ConfigValueError(
            f"{where}{key}={_show(raw)} is out of range: it must be {' and '.join(p for p in (left, right) if p)}"
        )


def _suggest(key, known):
    close = [k for k in known if k.lower() == key.lower() and k != key]
    close = close or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return (
        f" (RecBole would ignore it); did you mean '{close[0]}'?"
        if close
        else "; see properties/overall.yaml and properties/model/<Model>.yaml for the keys"
    )


def _show(value):
    text = value if isinstance(value, str) and value.strip() else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, except that a key given twice in one mapping is an error: plain yaml
    keeps the last value without a word, so the first line of a config file is silently lost."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' overrides on purpose
                    continue
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (yaml.YAMLError, TypeError):
                    continue  # an unhashable key: SafeLoader's own error says so
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigValueError(
                        f"config file '{self.name}' sets '{key}' twice (line {seen[key]} and line {line}): "
                        f"yaml would keep the last silently; delete one of them"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep)


@functools.cache
def _recbole_yaml_loader():
    """``_UniqueKeyLoader`` reading scalars as RecBole's Config reads a config file (its loader
    adds a float rule, so ``1e-3`` is a number; ``"[0,60]"`` stays a string, never evaluated)."""
    from recbole.config.configurator import Config

    theirs = Config._build_yaml_loader(None)  # the loader class; it uses nothing of self

    class Loader(_UniqueKeyLoader):
        yaml_implicit_resolvers = {k: list(v) for k, v in theirs.yaml_implicit_resolvers.items()}

    return Loader


def load_yaml_file(path):
    """A user's yaml file as RecBole reads it, but a repeated key is a ``ConfigValueError`` naming
    the file, the key and both lines, and so is a byte that is not UTF-8 (RecBole reads config
    files as UTF-8, whatever ``encoding`` says)."""
    with decoded(path, ConfigValueError, hint=None), open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_recbole_yaml_loader())  # noqa: S506  a SafeLoader subclass


MAX_DATASET_NAME = 100  # bytes: file names (255) also hold the model, a time stamp and a hash


def check_dataset_name(dataset):
    """A dataset is a folder name under data_path (RecBole joins the two): letters (any
    alphabet), digits, '.', '_', '-', starting with a letter or digit, short enough for the
    log and checkpoint file names built from it."""
    shown = repr(dataset[:40]) + ("..." if len(dataset) > 40 else "") if isinstance(dataset, str) else repr(dataset)
    if not isinstance(dataset, str) or not re.fullmatch(r"[^\W_][\w.-]*", dataset):
        raise ConfigValueError(
            f"dataset name {shown} is not a folder name: give the name (e.g. --dataset=ml-100k) and "
            f"set --data_path to the folder that holds it"
        )
    if len(dataset.encode("utf-8")) > MAX_DATASET_NAME:
        raise ConfigValueError(
            f"dataset name {shown} is {len(dataset.encode('utf-8'))} bytes long: log and checkpoint file "
            f"names hold it, so keep it to {MAX_DATASET_NAME} (rename the folder and its files)"
        )


def check_user_settings(model, dataset, config_file_list=None, config_dict=None):
    """Everything the user gave for one run: the dataset name, each config file's values (files
    that are missing or not yaml are reported by ``quick_start.config_files_for``), the dict."""
    check_dataset_name(dataset)
    for path in config_file_list or ():
        try:
            content = load_yaml_file(path)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict):
            check_values(model, content, where=f"{path}: ", evaluated=False)
    check_values(model, dict(config_dict or {}))


def check_values(model, settings, where="", evaluated=True):
    """Check user-given ``settings`` (``{key: value}`` from ``config_dict`` or a user's config
    file) before RecBole's Config sees them. ``where`` names their origin in messages;
    ``evaluated``: RecBole reads their strings as Python values (``config_dict``, the command
    line), not those of a config file."""
    known = known_keys()
    types = key_types(model)
    _, _, nullable = _property_tables()
    for key, raw in settings.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
            raise ConfigValueError(f"{where}{key!r} is not a config key: keys are letters, digits and '_'")
        if key not in known:
            raise ConfigValueError(f"{where}unknown config key '{key}'{_suggest(key, sorted(known))}")
        value = literal(raw) if evaluated else raw
        kind = types.get(key)
        if value is None:
            if key in nullable or kind is None or "none" in (kind or ""):
                continue
            raise ConfigValueError(f"{where}{key} needs a value ({kind}), not None")
        if kind and not _type_ok(value, kind):
            raise ConfigValueError(
                f"{where}{key}={_show(raw)} has the wrong type: {key} takes ({kind}), see properties/*.yaml"
            )
        # nan compares false with every bound and inf passes an open one: no range check sees them
        if kind and "float" in kind and not _finite(value):
            raise ConfigValueError(f"{where}{key}={_show(raw)} is not a finite number: give {key} a real value")
        _check_range(key, value, raw, where)
        if key in CHOICES and str(value).lower() not in CHOICES[key]:
            raise ConfigValueError(f"{where}{key}={_show(raw)} is not one of {', '.join(CHOICES[key])}")
        if key == "topk":
            for k in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise ConfigValueError(f"{where}topk={_show(raw)}: every cut-off must be an integer >= 1")
        if key == "eval_args":
            _check_eval_args(value, where)
        if key == "metrics":
            _check_metric_names(value, where)


def check_model_config(model, config):
    """The keys of ``model``'s own property file as a built Config holds them, by the same rules
    as a user's settings: for models built without this package's runner (RecBole's
    ``load_data_and_model``, a Config made by hand)."""
    _, _, keys = _scan_yaml(os.path.join(_our_dirs()[0], "model", f"{model}.yaml"))
    check_values(model, {key: config[key] for key in sorted(keys)}, where=f"{model}: ", evaluated=False)


def _check_metric_names(metrics, where=""):
    from recbole.evaluator.register import metric_types

    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    if not metrics:
        raise ConfigValueError(f"{where}metrics is empty: name at least one, e.g. metrics: [Recall, NDCG]")
    known = sorted(metric_types)
    for metric in metrics:
        if not isinstance(metric, str) or metric.lower() not in metric_types:
            hint = difflib.get_close_matches(str(metric).lower(), known, n=1, cutoff=0.5)
            hint = f"did you mean {hint[0]!r}? " if hint else ""
            raise ConfigValueError(f"{where}unknown metric {metric!r}: {hint}known metrics: {', '.join(known)}")


def _check_eval_args(args, where):
    if not isinstance(args, dict):
        raise ConfigValueError(
            f"{where}eval_args must be a dict like {{split: {{RS: [0.8, 0.1, 0.1]}}, order: RO, group_by: user, mode: full}}"
        )
    unknown = set(args) - {"split", "order", "group_by", "mode"}
    if unknown:
        raise ConfigValueError(
            f"{where}eval_args has unknown key(s) {', '.join(sorted(map(str, unknown)))}: it takes split, order, group_by, mode"
        )
    split = args.get("split")
    if split is not None:
        if not isinstance(split, dict) or len(split) != 1 or next(iter(split)) not in ("RS", "LS"):
            raise ConfigValueError(
                f"{where}eval_args split={_show(split)} must be {{RS: [train, valid, test]}} or {{LS: valid_and_test|valid_only|test_only}}"
            )
        kind, value = next(iter(split.items()))
        if kind == "RS":
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 3
                or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                    for v in value
                )
                or sum(value) <= 0
            ):
                raise ConfigValueError(
                    f"{where}eval_args split RS={_show(value)} must be 3 non-negative ratios (train, valid, test), e.g. [0.8, 0.1, 0.1]"
                )
        elif value not in ("valid_and_test", "valid_only", "test_only"):
            raise ConfigValueError(
                f"{where}eval_args split LS={_show(value)} must be valid_and_test, valid_only or test_only"
            )
    if args.get("order") is not None and args["order"] not in ("RO", "TO"):
        raise ConfigValueError(f"{where}eval_args order={_show(args['order'])} must be RO (random) or TO (by time)")
    if args.get("group_by") is not None and args["group_by"] not in ("user", "none", None):
        raise ConfigValueError(f"{where}eval_args group_by={_show(args['group_by'])} must be user or none")
    mode = args.get("mode")
    modes = mode.values() if isinstance(mode, dict) else [mode]
    for m in modes:
        if m is not None and not (isinstance(m, str) and re.fullmatch(r"full|labeled|(uni|pop)\d+", m)):
            raise ConfigValueError(f"{where}eval_args mode={_show(m)} must be full, labeled, uniN or popN")


def check_metrics(metrics, topk, valid_metric):
    """The evaluation settings agree: known metrics, a valid_metric among them (with its k among
    topk for a top-k metric)."""
    from recbole.evaluator.register import metric_information, metric_types

    _check_metric_names(metrics)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    kinds = {metric_types[m.lower()] for m in metrics}
    if len(kinds) > 1:
        raise ConfigValueError(
            f"metrics {metrics} mix ranking metrics and value metrics (e.g. RMSE): RecBole evaluates one kind per run"
        )
    if not isinstance(valid_metric, str) or not valid_metric:
        raise ConfigValueError(f"valid_metric={valid_metric!r} must name one of the metrics, e.g. NDCG@10")
    name, _, k = valid_metric.partition("@")
    if name.lower() not in [m.lower() for m in metrics]:
        raise ConfigValueError(
            f"valid_metric {valid_metric} is not among metrics {metrics}: add {name} to metrics or pick one of them"
        )
    # top-k metrics report name@k; GAUC, a ranking metric over the whole list, reports plain gauc
    cut_off = {"rec.topk", "rec.items"} & set(metric_information[name.lower()])
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    if cut_off:
        if not k.isdigit() or int(k) not in topk:
            raise ConfigValueError(
                f"valid_metric {valid_metric} needs a cut-off among topk {topk}, e.g. {name}@{topk[0] if topk else 10}"
            )
    elif k:
        raise ConfigValueError(f"valid_metric {valid_metric}: {name} takes no @k")


def check_launch(nproc=1, world_size=-1):
    """The process counts of a run: ``nproc`` of 0 or less would otherwise run one process as if
    nothing were asked, and a ``world_size`` below ``nproc`` waits for ranks that never come."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigValueError(f"nproc={nproc!r} must be an integer >= 1 (the processes on this machine; 1: no DDP)")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or (world_size != -1 and world_size < nproc):
        raise ConfigValueError(
            f"world_size={world_size!r} must be -1 (= nproc) or the ranks over all machines, at least nproc={nproc}"
        )


def check_device_request(user, gpu_id, use_gpu, use_cuda):
    """A GPU the user asked for (``gpu_id`` or ``device: cuda`` among the settings they gave,
    ``user``) exists. RecBole exports ``gpu_id`` as CUDA_VISIBLE_DEVICES and falls back to the CPU
    without a word when CUDA then sees no device, so ``--gpu_id=5`` on a one-GPU (or CPU-only)
    machine trained on the CPU. ``gpu_id``: the id list RecBole exported; ``use_cuda``: whether
    the run got a GPU."""
    import torch

    cpu = "run on CPU with --use_gpu=False"
    device = user.get("device")
    kind = str(device).strip().lower() if device is not None else None
    if kind not in (None, "cpu", "cuda"):
        raise ConfigValueError(
            f"device={_show(device)} must be cpu or cuda; choose the GPU with gpu_id (e.g. --gpu_id=1)"
        )
    if kind == "cpu" and use_cuda:  # RecBole overwrites device: this run would be on the GPU
        raise ConfigValueError(f"device=cpu is not read (RecBole picks the device from gpu_id and use_gpu): {cpu}")
    if kind == "cuda" and (not use_gpu or not gpu_id):
        raise ConfigValueError(
            f"device=cuda contradicts use_gpu={use_gpu}, gpu_id={gpu_id!r} (a CPU run): drop device, or ask for a GPU with gpu_id"
        )
    if not (kind == "cuda" or ("gpu_id" in user and gpu_id and use_gpu)):
        return  # RecBole's default gpu_id: the GPU when there is one, else the CPU, as always
    asked = f"gpu_id={gpu_id}" if "gpu_id" in user else "device=cuda"
    if not torch.cuda.is_available():
        raise ConfigValueError(
            f"{asked}: there is no such GPU (CUDA finds none with CUDA_VISIBLE_DEVICES={gpu_id}; "
            f"torch.cuda.is_available() is False): give an id nvidia-smi lists, or {cpu}"
        )
    ids = [i.strip() for i in gpu_id.split(",")]
    visible = torch.cuda.device_count()  # CUDA stops listing at the first id that does not exist
    if visible < len(ids):
        raise ConfigValueError(
            f"gpu_id={gpu_id}: there is no GPU {ids[visible]} on this machine (CUDA sees {visible} of the "
            f"{len(ids)} ids): give ids nvidia-smi lists, or {cpu}"
        )


def _empty_by_design(split):
    """The parts a split leaves empty on purpose: LS valid_only / test_only, an RS ratio of 0."""
    parts = {"valid_only": {"test"}, "test_only": {"valid"}}.get(split.get("LS"), set())
    ratios = split.get("RS")
    if isinstance(ratios, (list, tuple)) and len(ratios) == 3:
        parts |= {name for name, ratio in zip(("valid", "test"), ratios[1:]) if not ratio}
    return parts


def check_config(config):
    """Checks on the merged Config (user values over the property files' defaults)."""
    check_metrics(config["metrics"], config["topk"], config["valid_metric"])
    split = config["eval_args"]["split"] or {}
    # RecBole trains without validation when valid is empty, but a run always tests: no test set
    # fails only after training
    if "test" in _empty_by_design(split):
        raise ConfigValueError(
            f"eval_args split {split} leaves the test set empty, and a run tests the model it trains: "
            f"give test a ratio > 0 (e.g. {{RS: [0.8, 0.1, 0.1]}}) or use {{LS: valid_and_test}}"
        )
    for key in FILE_KEYS:  # read only once training starts (pretraining, resuming)
        if config[key]:
            existing_file(key, config[key])


def check_data(config, dataset, train_data=None, valid_data=None, test_data=None):
    """After loading and splitting, before any model is built: top-k within the catalogue, and
    a split that leaves something to validate and test on."""
    items = dataset.item_num - 1  # id 0 is RecBole's padding
    users = dataset.user_num - 1
    topk = config["topk"] or []
    if topk and max(topk) > items:  # full ranking: torch.topk over the catalogue fails after training
        raise ConfigValueError(
            f"topk {max(topk)} is larger than the {items} items of dataset '{config['dataset']}': "
            f"use cut-offs up to {items} (e.g. --topk=[{min(10, items)}])"
        )
    split = config["eval_args"]["split"] or {}
    deliberate = _empty_by_design(split)
    for name, data in (("valid", valid_data), ("test", test_data)):
        if data is None or name in deliberate:
            continue
        part = getattr(data, "_dataset", None)  # not `or`: an empty Dataset is falsy
        if part is None:
            part = getattr(data, "dataset", None)
        if part is not None and len(part) == 0:
            counts = dataset.inter_feat[dataset.uid_field].numpy() if dataset.inter_num else []
            import numpy as np

            most = int(np.bincount(counts).max()) if len(counts) else 0
            raise DatasetSplitError(
                f"the {name} split of dataset '{config['dataset']}' is empty: with split {split} no "
                f"user has enough interactions ({users} users, at most {most} interactions each; "
                f"a per-user random split needs 3 or more). Use a dataset with longer histories, "
                f"or another eval_args split"
            )


def check_samplable(config, dataset):
    """Before RecBole's samplers are built: a negative sampler draws items a user has not
    interacted with, and RecBole's refuses a user who interacted with every item in a traceback
    naming nobody."""
    args = [config[f"{phase}_neg_sample_args"] or {} for phase in ("train", "valid", "test")]
    if all(a.get("distribution", "none") == "none" for a in args) or not dataset.inter_num:
        return
    import numpy as np

    inter = dataset.inter_feat
    pairs = np.unique(np.stack([np.asarray(inter[dataset.uid_field]), np.asarray(inter[dataset.iid_field])]), axis=1)
    seen = np.bincount(pairs[0], minlength=dataset.user_num)
    full = np.flatnonzero(seen >= dataset.item_num - 1)  # id 0 is padding
    if len(full):
        names = ", ".join(str(dataset.id2token(dataset.uid_field, u)) for u in full[:3])
        raise DatasetSplitError(
            f"{len(full)} user(s) of dataset '{config['dataset']}' (e.g. {names}) interacted with every one "
            f"of its {dataset.item_num - 1} items, so RecBole's negative sampler has no item to draw for "
            f"them: remove them from {config['dataset']}.inter, or filter them out with user_inter_num_interval"
        )


# pandas.read_csv's default na_values: RecBole's reader takes them as missing values, not errors
_PANDAS_NA = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)


ATOMIC_ENCODING_HINT = "or give its encoding with --encoding (e.g. --encoding=latin-1)"


@contextlib.contextmanager
def decoded(path, error=AtomicFileError, hint=ATOMIC_ENCODING_HINT):
    """Reading ``path`` as text: a byte its encoding cannot read is ``error``, naming the file,
    the first line that holds one and the fix (``hint``: the other way out, if any), not a bare
    UnicodeDecodeError with a position in some buffer."""
    try:
        yield
    except UnicodeDecodeError as err:
        line = None
        try:
            with open(path, "rb") as f:
                line = next((n for n, raw in enumerate(f, 1) if not _decodes(raw, err.encoding)), None)
        except OSError:
            pass
        where = f" line {line}" if line else ""
        raise error(
            f"{path}{where} is not {err.encoding} text (byte {err.object[err.start : err.start + 1]!r}: "
            f"{err.reason}): save the file as UTF-8{', ' + hint if hint else ''}"
        ) from None


def _decodes(raw, encoding):
    try:
        raw.decode(encoding)
        return True
    except UnicodeDecodeError:
        return False


def check_atomic_file(path, separator="\t", encoding="utf-8", float_fields=(), id_fields=(), logger=None):
    """Header and rows of one atomic file, before RecBole's reader sees it. Raises
    AtomicFileError for an empty file, a byte its encoding cannot read, a header without
    ``name:type`` or with a name twice, an id field (``id_fields``) that is not a token, a file
    with a header and no rows, a row with more fields than the header, and a non-numeric value in
    a float column; warns (``logger``) of rows with missing columns and of empty or NA values in
    float columns, which RecBole fills; returns the short rows as ``(count, first line number)``."""
    from recbole.utils.enum_type import FeatureType

    types = {t.value for t in FeatureType}
    name = os.path.basename(path)
    with decoded(path), open(path, encoding=encoding, newline="") as f:
        head = f.readline().rstrip("\r\n")
        if not head.strip():
            raise AtomicFileError(
                f"atomic file {path} is empty: its first line must be a header like "
                f"'user_id:token{separator!r}item_id:token' followed by one row per record".replace("'\\t'", "\\t")
            )
        columns = head.split(separator)
        seen = {}
        for i, column in enumerate(columns):
            parts = column.split(":")
            if len(parts) != 2 or not parts[0] or parts[1] not in types:
                what = "has no ':type'" if len(parts) == 1 else f"has type {':'.join(parts[1:])!r}"
                raise AtomicFileError(
                    f"column {i + 1} {column!r} of the header of {name} {what}: each header column is "
                    f"name:type with type one of {', '.join(sorted(types))} (e.g. rating:float)"
                )
            field, kind = parts
            if field in seen:  # RecBole's reader then fails on a column count, naming nothing
                raise AtomicFileError(
                    f"the header of {name} names column '{field}' twice (columns {seen[field]} and {i + 1}): "
                    f"rename or delete one"
                )
            seen[field] = i + 1
            if field in id_fields and kind != "token":  # ids are remapped as tokens, never as numbers
                raise AtomicFileError(
                    f"column {i + 1} {column!r} of the header of {name} is an id field: id fields must "
                    f"be :token (write {field}:token)"
                )
        float_cols = [
            i for i, c in enumerate(columns) if c.split(":")[1] == "float" and c.split(":")[0] in float_fields
        ]
        short, first_short, rows = 0, None, 0
        missing = dict.fromkeys(float_cols, (0, None))  # column -> (empty or NA values, first line)
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            rows += 1
            values = line.split(separator)
            if len(values) > len(columns):  # pandas keeps the header's columns: values would be dropped or shifted
                raise AtomicFileError(
                    f"{name} line {number} has {len(values)} fields, its header {len(columns)}: atomic files "
                    f"have no quoting, so a value must not contain the field separator "
                    f"({'a tab' if separator == chr(9) else repr(separator)}); remove the extra one, or name "
                    f"the extra column in the header"
                )
            if len(values) < len(columns):
                short += 1
                first_short = first_short or number
            for i in float_cols:
                if i < len(values) and values[i] in _PANDAS_NA:
                    count, first = missing[i]
                    missing[i] = (count + 1, first or number)
                elif i < len(values):
                    try:
                        float(values[i])
                    except ValueError:
                        raise AtomicFileError(
                            f"{name} line {number}: column {columns[i]!r} holds {_show(values[i])}, not a number; "
                            f"fix the value, or declare the column :token if it is not numeric"
                        ) from None
    if rows == 0:
        raise AtomicFileError(f"atomic file {path} has a header but no rows")
    if short and logger is not None:
        logger.warning(
            f"{name}: {short} of {rows} rows have fewer columns than its header "
            f"({len(columns)}; first at line {first_short}): RecBole drops those without a user or "
            f"item id and fills their other missing values (float: the column mean, token: padding)"
        )
    for i, (count, first) in missing.items():
        if count and logger is not None:
            logger.warning(
                f"{name}: {count} of {rows} values of {columns[i]!r} are empty or NA (first at line "
                f"{first}): RecBole fills them with the column's mean"
            )
    return short, first_short


# ---- the checks above, wired into RecBole's atomic-file reader and Config ----------------------
class _PandasLiteralText(types.ModuleType):
    """pandas as RecBole's atomic-file reader sees it, with quote parsing off: atomic files are
    tab-separated with no quoting, but ``read_csv``'s default treats a value that starts with
    ``"`` (a quoted movie title, a review) as the start of a quoted field and fails. And a text
    column (RecBole's ``dtype`` str: ids, tokens) is missing only where empty: pandas' default
    reads ``NA``, ``null``, ``None``, ``nan``, ``N/A`` as missing, so such ids were dropped (or
    ended in an IndexError); float columns keep pandas' missing values."""

    def __init__(self, pandas):
        super().__init__("pandas")
        self._pandas = pandas

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        kwargs.setdefault("quoting", csv.QUOTE_NONE)
        dtype = kwargs.get("dtype")
        if isinstance(dtype, dict) and "na_values" not in kwargs:
            kwargs.setdefault("keep_default_na", False)
            kwargs["na_values"] = {column: [""] if kind is str else list(_PANDAS_NA) for column, kind in dtype.items()}
        return self._pandas.read_csv(*args, **kwargs)


def _atomic_files_unquoted():
    from recbole.data.dataset import dataset as dataset_module

    if not isinstance(dataset_module.pd, _PandasLiteralText):
        dataset_module.pd = _PandasLiteralText(dataset_module.pd)


def _atomic_files_checked():
    """RecBole's ``Dataset._load_feat`` reads an atomic file's header with
    ``field, ftype = column.split(":")`` and its rows with ``pandas.read_csv``, so an empty file, a
    header column without ``:type``, or a word in a float column end in a bare ``ValueError``
    (``not enough values to unpack``, ``could not convert string to float``) with no file or line
    named, and rows with missing columns are dropped or filled without a word. This checks each
    file first (``validation.check_atomic_file``): one-line errors naming the file, line and
    column, and a warning with the count of short rows."""
    from logging import getLogger

    from recbole.data.dataset import Dataset
    from recbole.utils.enum_type import FeatureSource

    if getattr(Dataset._load_feat, "_checked", False):
        return
    load_feat = Dataset._load_feat

    def _load_feat(self, filepath, source):
        load_col, unload_col = self._get_load_and_unload_col(source)
        if load_col == set():
            return load_feat(self, filepath, source)
        separator, encoding = self.config["field_separator"], self.config["encoding"]
        with decoded(filepath), open(filepath, encoding=encoding) as f:
            header = [c.split(":")[0] for c in f.readline().rstrip("\r\n").split(separator)]
        wanted = [c for c in header if (load_col is None or c in load_col) and not (unload_col and c in unload_col)]
        ids = [f for f in (self.uid_field, self.iid_field) if f in wanted]
        check_atomic_file(filepath, separator, encoding, float_fields=wanted, id_fields=ids, logger=getLogger())
        if source == FeatureSource.INTERACTION:
            missing = [f for f in (self.uid_field, self.iid_field) if f and f not in wanted]
            if missing:
                raise AtomicFileError(
                    f"{os.path.basename(filepath)} has no column {', '.join(missing)} (loaded columns: "
                    f"{', '.join(wanted)}): check its header, USER_ID_FIELD / ITEM_ID_FIELD and load_col"
                )
        feat = load_feat(self, filepath, source)
        key = {FeatureSource.USER: self.uid_field, FeatureSource.ITEM: self.iid_field}.get(source)
        if feat is not None and key in feat:
            warn_duplicate_ids(feat, key, os.path.basename(filepath), getLogger())
        return feat

    _load_feat._checked = True
    Dataset._load_feat = _load_feat


def warn_duplicate_ids(feat, key, name, logger):
    """A ``.user`` / ``.item`` file that lists an id on more than one row: RecBole keeps the first
    row and drops the others without a word, so a second, different row is lost."""
    repeated = feat[feat[key].duplicated(keep=False)]
    if repeated.empty:
        return
    ids = repeated[key].unique()
    dropped = len(repeated) - len(ids)
    differ = len(repeated.astype(str).drop_duplicates()) - len(ids)
    example = ", ".join(map(str, ids[:3]))
    logger.warning(
        f"{name}: {len(ids)} id(s) of {key} have more than one row (e.g. {example}): RecBole keeps the "
        f"first row of each and drops the other {dropped}"
        + (f", {differ} of which differ from it" if differ else " (identical copies)")
    )


def check_feat_ids(dataset):
    """Every user (item) of the loaded interactions has a row in the ``.user`` (``.item``) file,
    when that file is loaded: RecBole's ``_filter_inter_by_user_or_item`` drops the interactions
    of the others without a word. Runs on the files as read, before any of RecBole's filters."""
    if dataset.config["filter_inter_by_user_or_item"] is not True:
        return  # RecBole keeps those interactions then (their features are padding)
    inter = dataset.inter_feat
    for source, field in (("user", dataset.uid_field), ("item", dataset.iid_field)):
        feat = getattr(dataset, f"{source}_feat", None)
        if feat is None or field is None or field not in inter or field not in feat:
            continue
        ids = inter[field]
        lacking = ids.notna() & ~ids.isin(feat[field].dropna().unique())  # a missing id is another warning
        if lacking.any():
            missing = ids[lacking].unique()
            name = f"{dataset.dataset_name}.{source}"
            example = ", ".join(map(str, missing[:3]))
            raise AtomicFileError(
                f"{name} has no row for {len(missing)} {source} id(s) of {dataset.dataset_name}.inter "
                f"(e.g. {example}), used by {int(lacking.sum())} of {len(inter)} interactions that RecBole "
                f"would drop silently: add their rows to {os.path.join(dataset.dataset_path, name)}, or leave "
                f"that file out by removing '{source}' from load_col"
            )


_FILTER_KEYS = ("user_inter_num_interval", "item_inter_num_interval", "val_interval")


def check_filtered(dataset, rows_read):
    """What RecBole's filters leave of the ``rows_read`` interactions: those of at least 2 users
    and 2 items. RecBole went on with fewer: none ended in "Some feat is empty", one user in a
    negative sampler's error, both as tracebacks, the first naming no filter."""
    inter = dataset.inter_feat
    users, items = (inter[f].nunique() if f in inter else 2 for f in (dataset.uid_field, dataset.iid_field))
    if users >= 2 and items >= 2:
        return
    name = dataset.dataset_name
    active = [
        f"{key}={dataset.config[key]}"
        for key in _FILTER_KEYS
        if dataset.config[key] and str(dataset.config[key]).replace(" ", "") != "[0,inf)"
    ]
    if active and len(inter) < rows_read:
        where = f"left after RecBole's filters ({', '.join(active)}), which kept {len(inter)} of its {rows_read} interactions"
        fix = "loosen those filters"
    else:
        where, fix = f"in {rows_read} interactions", f"add interactions to {name}.inter"
    raise DatasetSplitError(
        f"dataset '{name}' has {users} user(s) and {items} item(s) {where}; a recommender needs at "
        f"least 2 users and 2 items to train and rank: {fix}"
    )


def _feat_ids_checked():
    """``check_feat_ids`` before RecBole's filters (``Dataset._data_filtering``, which a
    benchmark_filename split skips, and then nothing is dropped), ``check_filtered`` after them
    (before their ``_reset_index``, which fails on an empty table)."""
    from recbole.data.dataset import Dataset

    if getattr(Dataset._data_filtering, "_checked", False):
        return
    data_filtering, reset_index = Dataset._data_filtering, Dataset._reset_index

    def _data_filtering(self):
        check_feat_ids(self)
        self._rows_read = len(self.inter_feat)
        return data_filtering(self)

    def _reset_index(self):
        check_filtered(self, getattr(self, "_rows_read", len(self.inter_feat)))
        return reset_index(self)

    _data_filtering._checked = True
    Dataset._data_filtering = _data_filtering
    Dataset._reset_index = _reset_index


def _config_strings_literal():
    """RecBole's ``Config._convert_config_dict`` runs ``eval`` on every string value of
    ``config_dict`` and of the command line, so ``--x=__import__('os').system(...)`` runs code
    and ``--epochs=1+1`` becomes 2. Strings are read as Python literals only
    (``validation.literal``: numbers, lists, dicts, True/False/None), never evaluated."""
    from recbole.config import configurator

    def _convert_config_dict(self, config_dict):
        for key in config_dict:
            config_dict[key] = literal(config_dict[key])
        return config_dict

    configurator.Config._convert_config_dict = _convert_config_dict


def _is_project_file(path):
    """A property file shipped with this package or RecBole (their data_path is a default)."""
    real = os.path.realpath(path)
    roots = (properties_dir(), os.path.join(_recbole_dir(), "properties"))
    return any(real.startswith(os.path.realpath(root) + os.sep) for root in roots)


def _user_data_path_kept():
    """RecBole's ``Config._set_default_parameters`` replaces ``data_path`` by the copy of ml-100k
    in its wheel whenever the dataset is called ml-100k, so ``--data_path=<a folder holding the
    user's own ml-100k>`` silently ran on RecBole's copy. A data_path the user gave (command
    line, config dict, or a config file of theirs rather than a shipped property file) is kept;
    with none, ml-100k is still RecBole's bundled copy."""
    from recbole.config import configurator

    Config = configurator.Config
    if getattr(Config._set_default_parameters, "_checked", False):
        return
    load_config_files, set_default_parameters = Config._load_config_files, Config._set_default_parameters

    def _load_config_files(self, file_list):
        user_files = [f for f in file_list or () if not _is_project_file(f)]
        self._user_file_config = load_config_files(self, user_files) if user_files else {}
        return load_config_files(self, file_list)

    def _set_default_parameters(self):
        set_default_parameters(self)
        given = [getattr(self, "_user_file_config", {}), self.variable_config_dict, self.cmd_config_dict]
        path = next((d["data_path"] for d in reversed(given) if d and d.get("data_path") is not None), None)
        if self.dataset == "ml-100k" and path is not None:
            self.final_config_dict["data_path"] = os.path.join(path, self.dataset)

    _set_default_parameters._checked = True
    Config._load_config_files = _load_config_files
    Config._set_default_parameters = _set_default_parameters


def apply():
    """Wire the checks into RecBole (once): atomic files read unquoted and checked first, feature
    files that cover the interactions, config strings read as literals, a user's data_path kept
    for ml-100k. Must run before RecBole builds
    a Config or a Dataset."""
    _atomic_files_unquoted()
    _atomic_files_checked()
    _feat_ids_checked()
    _config_strings_literal()
    _user_data_path_kept()
