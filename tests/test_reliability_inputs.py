"""Issue 11, items 8-12: a user's mistake is caught before training, in one line, exit code 2, no
traceback (config values, unknown keys, metrics, top-k, malformed atomic files, a split that
leaves nothing to validate on); a corrupt embedding cache is rebuilt; stale conversion folders go.

A few cases run the real CLI in a subprocess (each costs a Python start with RecBole's imports);
the rest go through ``validation`` in-process. Every case failed on the code before the fix:
a traceback (often after training), or a key silently ignored."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import recbole_cllm4rec  # noqa: F401
from recbole_cllm4rec import validation
from recbole_cllm4rec.validation import AtomicFileError, ConfigValueError, DatasetSplitError, InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
LOAD_ALL = "load_col: {inter: [user_id, item_id, rating, timestamp]}\n"


def write_dataset(root, name, lines):
    folder = root / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("".join(line + "\n" for line in lines))
    return str(root / "data")


def rows(n_users=20, per_user=6, n_items=15, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            out.append(f"u{u}\ti{i}\t4\t{1000 + 10 * u + int(i)}")
    return out


def run_cli(workdir, *args, timeout=180, checkpoint_dir=None):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "run_recbole.py"),
        *args,
        "--show_progress=False",
        f"--checkpoint_dir={checkpoint_dir or workdir / 'saved'}",
    ]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def cli_error(tmp_path, *args):
    """The one ``error: ...`` line of a CLI run refused before training (exit 2, no traceback)."""
    proc = run_cli(tmp_path, *args)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: "), output[-3000:]
    saved = tmp_path / "saved"
    assert not saved.is_dir() or not [f for f in os.listdir(saved) if f.endswith(".pth")]  # nothing trained
    return message


# ------------------------------------------------------------------ the CLI, end to end
def _dataset_case(tmp_path, kind):
    """Build the bad input of a data case; returns the CLI arguments."""
    if kind == "empty_inter":
        path = write_dataset(tmp_path, "bad", [])
        (tmp_path / "data" / "bad" / "bad.inter").write_text("")
    elif kind == "header_without_type":
        path = write_dataset(tmp_path, "bad", ["user_id\titem_id\trating\ttimestamp"] + rows())
    elif kind == "word_in_float_column":
        lines = [HEADER] + rows()
        lines[7] = lines[7].replace("\t4\t", "\tfour\t")
        path = write_dataset(tmp_path, "bad", lines)
    elif kind == "no_user_long_enough":
        path = write_dataset(tmp_path, "bad", [HEADER] + rows(per_user=2))
    config = tmp_path / "load.yaml"
    config.write_text(LOAD_ALL)
    return ["--model=Pop", "--dataset=bad", f"--data_path={path}", f"--config_files={config}"]


CLI_CASES = [
    # (id, arguments or a data case, words the one-line message must hold)
    ("epochs_not_a_number", ["--model=BPR", "--epochs=abc"], ["epochs", "int"]),
    ("negative_learning_rate", ["--model=BPR", "--learning_rate=-1", "--epochs=1"], ["learning_rate", "> 0"]),
    ("mask_ratio_above_one", ["--model=CLLM4Rec", "--mask_ratio=2"], ["mask_ratio", "<= 1"]),
    ("misspelt_key", ["--model=BPR", "--epoch=1"], ["'epoch'", "'epochs'"]),
    ("comma_only_model", ["--model=,"], ["names no model"]),
    ("unknown_metric", ["--model=Pop", "--metrics=[Recall,NDCGG]"], ["NDCGG", "ndcg"]),
    ("valid_metric_not_in_metrics", ["--model=Pop", "--valid_metric=MAP@10"], ["MAP@10", "not among metrics"]),
    ("topk_above_item_count", ["--model=Pop", "--topk=[10,5000]"], ["5000", "1682 items"]),
    ("empty_inter", "empty_inter", ["bad.inter", "empty"]),
    ("header_without_type", "header_without_type", ["user_id", ":type"]),
    ("word_in_float_column", "word_in_float_column", ["line 8", "rating", "four"]),
    ("no_user_long_enough", "no_user_long_enough", ["split", "empty", "at most 2"]),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, case):
    _, args, words = case
    if isinstance(args, str):
        args = _dataset_case(tmp_path, args)
    message = cli_error(tmp_path, *args)
    for word in words:
        assert word in message, message


def test_cli_short_rows_are_counted_and_warned(tmp_path):
    lines = [HEADER] + rows()
    lines[3] = "u1\ti3"  # rating and timestamp missing
    lines[9] = "u2"  # no item
    path = write_dataset(tmp_path, "short", lines)
    config = tmp_path / "load.yaml"
    config.write_text(LOAD_ALL)
    proc = run_cli(tmp_path, "--model=Pop", "--dataset=short", f"--data_path={path}", f"--config_files={config}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "short.inter: 2 of 120 rows have fewer columns than its header (4; first at line 4)" in output


# ------------------------------------------------------------------ in-process: config values
BAD_VALUES = [
    ({"epochs": "abc"}, "epochs=abc has the wrong type"),
    ({"epochs": -1}, "epochs=-1 is out of range"),
    ({"epochs": 2.5}, "wrong type"),
    ({"epochs": None}, "needs a value"),
    ({"learning_rate": -1}, "learning_rate=-1 is out of range"),
    ({"learning_rate": 0}, "out of range"),
    ({"learning_rate": "fast"}, "wrong type"),
    ({"mask_ratio": 2}, "mask_ratio=2 is out of range"),
    ({"topk": 0}, "every cut-off must be an integer >= 1"),
    ({"topk": [10, -5]}, "every cut-off"),
    ({"topk": "ten"}, "wrong type"),
    ({"pretrain_batch_size": "abc"}, "pretrain_batch_size=abc has the wrong type"),
    ({"train_batch_size": 0}, "out of range"),
    ({"eval_batch_size": -4096}, "out of range"),
    ({"stopping_step": -1}, "out of range"),
    ({"eval_step": "often"}, "wrong type"),
    ({"weight_decay": -0.1}, "out of range"),
    ({"embedding_size": 0}, "out of range"),
    ({"dropout_prob": 1.5}, "out of range"),
    ({"tau": 0}, "out of range"),
    ({"seed": "abc"}, "wrong type"),
    ({"show_progress": "maybe"}, "wrong type"),
    ({"reproducibility": 3}, "wrong type"),
    ({"readout": "middle"}, "not one of last, mean"),
    ({"autocast": "fp8"}, "not one of"),
    ({"learner": "adamm"}, "not one of"),
    ({"state": "LOUD"}, "not one of"),
    ({"epoch": 1}, "unknown config key 'epoch' (RecBole would ignore it); did you mean 'epochs'?"),
    ({"learnign_rate": 5}, "did you mean 'learning_rate'?"),
    ({"Learning_Rate": 0.1}, "did you mean 'learning_rate'?"),
    ({"topK": 10}, "did you mean 'topk'?"),
    ({"valid_metrics": "NDCG@10"}, "did you mean 'valid_metric'?"),
    ({"train_batchsize": 64}, "did you mean 'train_batch_size'?"),
    ({"metrics": ["Recall", "NDCGG"]}, "unknown metric 'NDCGG': did you mean 'ndcg'?"),
    ({"metrics": []}, "metrics is empty"),
    ({"eval_args": {"split": {"XS": [0.8, 0.2]}}}, "eval_args split"),
    ({"eval_args": {"split": {"RS": [0.8, -0.1, 0.3]}}}, "non-negative ratios"),
    ({"eval_args": {"order": "XO"}}, "must be RO"),
    ({"eval_args": {"mode": "most"}}, "must be full"),
    ({"eval_args": {"splitt": {"RS": [0.8, 0.1, 0.1]}}}, "unknown key"),
    ({"eval_args": "RS"}, "eval_args takes (dict)"),
]


@pytest.mark.parametrize("settings,message", BAD_VALUES, ids=[str(s) for s, _ in BAD_VALUES])
def test_bad_values_are_one_line_errors(settings, message):
    with pytest.raises(ConfigValueError) as err:
        validation.check_values("CLLM4Rec", settings)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, recbole_cllm4rec.USER_ERRORS)


GOOD_VALUES = [
    {"learning_rate": "1e-3", "epochs": 5, "topk": [10, 20], "metrics": "NDCG"},
    {"gpu_id": "0,1,2,3"},  # README's multi-GPU command; RecBole reads it as a tuple
    {"epochs": 0},  # evaluate without finetuning: CLLM4Rec's "pretraining only" ablation
    {"topk": 10, "gpu_id": 0, "mask_ratio": 1.0, "stopping_step": 0, "eval_step": 0, "embedding_cache_dir": None},
    {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "uni100"}},
    {"eval_args": {"split": {"LS": "valid_and_test"}, "mode": {"valid": "full", "test": "pop50"}}},
    {"train_neg_sample_args": None, "clip_grad_norm": {"max_norm": 5}, "pretrained_file": None},
    {"local_rank": 0, "world_size": 2, "nproc": 2, "ip": "localhost", "port": "5678", "offset": 0},
]


@pytest.mark.parametrize("settings", GOOD_VALUES)
def test_valid_values_pass(settings):
    validation.check_values("CLLM4Rec", settings)


def test_every_shipped_property_file_passes():
    import glob

    import yaml

    for path in glob.glob(os.path.join(ROOT, "properties", "**", "*.yaml"), recursive=True):
        model = os.path.basename(path)[:-5] if os.sep + "model" + os.sep in path else "CLLM4Rec"
        with open(path, encoding="utf-8") as f:
            validation.check_values(model, yaml.safe_load(f) or {}, where=f"{path}: ")


@pytest.mark.parametrize(
    "metrics,topk,valid,message",
    [
        (["Recall", "NDCG"], [10], "MRR@10", "MRR@10 is not among metrics"),
        (["Recall", "NDCG"], [10, 20], "NDCG@5", "needs a cut-off among topk [10, 20]"),
        (["Recall", "NDCG"], [10], "NDCG", "needs a cut-off"),
        (["Recall", "RMSE"], [10], "Recall@10", "mix ranking metrics and value metrics"),
        (["Recall"], [10], "", "must name one of the metrics"),
    ],
)
def test_metric_settings_must_agree(metrics, topk, valid, message):
    with pytest.raises(ConfigValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validation.check_metrics(metrics, topk, valid)


def test_gauc_is_a_valid_metric_without_cut_off():
    validation.check_metrics(["Recall", "GAUC"], [10], "GAUC")


def test_config_file_values_are_checked_too(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learnign_rate: 0.01\n")
    with pytest.raises(ConfigValueError, match=r"bad.yaml: unknown config key 'learnign_rate'.*'learning_rate'"):
        recbole_cllm4rec.run("Pop", config_file_list=[str(bad)], config_dict={"state": "WARNING"})


def test_bad_yaml_config_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [0.1\n")
    with pytest.raises(recbole_cllm4rec.ConfigFileError, match="not valid yaml") as err:
        recbole_cllm4rec.quick_start.config_files_for("Pop", "ml-100k", [str(bad)])
    assert "\n" not in str(err.value)


def test_compare_checks_every_model_before_training_any(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigValueError, match="did you mean 'epochs'"):
        recbole_cllm4rec.compare(
            ["Pop", "ItemKNN"], "ml-100k", config_dict={"epoch": 1}, results_file=str(tmp_path / "r.md")
        )
    assert not (tmp_path / "saved").exists() and not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("name", ["", "../ml-100k", "a/b", " ml-100k"])
def test_dataset_name_is_a_folder_name(name):
    with pytest.raises(ConfigValueError, match="not a folder name"):
        recbole_cllm4rec.quick_start.build_config("Pop", name)


def test_config_strings_are_never_evaluated(tmp_path):
    """RecBole's Config ``eval``s string values; compat reads literals only."""
    from recbole.config import Config

    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close() or 1"
    converted = Config._convert_config_dict(None, {"seed": code, "lr": "1e-3", "k": "[10, 20]", "b": "true"})
    assert not marker.exists()
    assert converted == {"seed": code, "lr": 0.001, "k": [10, 20], "b": True}
    with pytest.raises(ConfigValueError, match="seed=.* has the wrong type"):
        recbole_cllm4rec.quick_start.build_config("Pop", config_dict={"seed": code})
    assert not marker.exists()


# ------------------------------------------------------------------ in-process: atomic files
def test_atomic_file_checks(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("")
    with pytest.raises(AtomicFileError, match="is empty"):
        validation.check_atomic_file(str(path))
    path.write_text(HEADER + "\n")
    with pytest.raises(AtomicFileError, match="has a header but no rows"):
        validation.check_atomic_file(str(path))
    path.write_text("user_id:token\titem_id\n1\t2\n")
    with pytest.raises(AtomicFileError, match="column 2 'item_id' of the header of x.inter has no ':type'"):
        validation.check_atomic_file(str(path))
    path.write_text("user_id:token\titem_id:tokn\n1\t2\n")
    with pytest.raises(AtomicFileError, match="has type 'tokn'"):
        validation.check_atomic_file(str(path))
    path.write_text(HEADER + "\n1\t2\t4\t5\n1\t3\tfour\t6\n")
    with pytest.raises(AtomicFileError, match="x.inter line 3: column 'rating:float' holds four"):
        validation.check_atomic_file(str(path), float_fields=["rating"])
    path.write_text(HEADER + "\n1\t2\tNA\t5\n1\t3\tn/a\t6\n")  # pandas' missing values, as RecBole reads them
    validation.check_atomic_file(str(path), float_fields=["rating"])
    validation.check_atomic_file(str(path), float_fields=["timestamp"])  # rating is not loaded: fine


def test_short_rows_counted(tmp_path, caplog):
    path = tmp_path / "x.inter"
    path.write_text(HEADER + "\n1\t2\t4\t5\n1\t3\n\n2\n2\t3\t1\t1\n")
    with caplog.at_level(logging.WARNING):
        assert validation.check_atomic_file(str(path), logger=logging.getLogger("t")) == (2, 3)
    assert "2 of 4 rows have fewer columns" in caplog.text


def test_split_with_nothing_to_validate_is_an_error_before_training(tmp_path, monkeypatch):
    from recbole.data import create_dataset, data_preparation

    monkeypatch.chdir(tmp_path)
    data_path = write_dataset(tmp_path, "two", [HEADER] + rows(per_user=2))
    config = recbole_cllm4rec.quick_start.build_config(
        "Pop", "two", config_dict={"data_path": data_path, "state": "WARNING", "show_progress": False}
    )
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    with pytest.raises(DatasetSplitError, match="valid split of dataset 'two' is empty.*at most 2"):
        validation.check_data(config, dataset, train, valid, test)


# ------------------------------------------------------------------ embedding cache, conversions
def test_corrupt_embedding_cache_is_rebuilt_and_logged(tmp_path, monkeypatch, caplog):
    from recbole_cllm4rec.llm.text_encoder import TextEncoder

    calls = []

    def embed(self, texts):
        calls.append(len(texts))
        return np.arange(len(texts) * 3, dtype=np.float32).reshape(len(texts), 3)

    monkeypatch.setattr(TextEncoder, "_embed", embed)
    encoder = TextEncoder("all-minilm-l6-v2", cache_dir=str(tmp_path))
    texts = ["a", "b"]
    first = encoder.encode(texts)
    path = encoder.cache_path(texts)
    assert os.path.isfile(path) and calls == [2]
    assert encoder.encode(texts).equal(first) and calls == [2]  # a hit
    good = open(path, "rb").read()
    for corrupt in (b"", good[:40], b"\x93NUMPY garbage", good[:-8] + np.float32([np.nan, 1]).tobytes()):
        with open(path, "wb") as f:
            f.write(corrupt)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert encoder.encode(texts).equal(first)
        assert "is corrupt" in caplog.text and "rebuilt" in caplog.text
        assert open(path, "rb").read() == good  # written again, whole
    assert calls == [2] * 5


def test_next_conversion_removes_stale_partial_folders(tmp_path):
    import json
    import socket

    from recbole_cllm4rec.data.convert import Converter

    reviews = tmp_path / "r.json"
    reviews.write_text(
        "".join(
            json.dumps(
                {
                    "reviewerID": f"u{u}",
                    "asin": f"i{i}",
                    "overall": 5.0,
                    "unixReviewTime": 1_400_000_000 + i,
                    "reviewText": "fine",
                }
            )
            + "\n"
            for u in range(6)
            for i in range(6)
        )
    )
    out = tmp_path / "out"
    killed = out / ".ds.partial-abc123"
    killed.mkdir(parents=True)
    (killed / "ds.inter").write_bytes(b"x" * 1000)
    dead = out / ".ds.partial-dead"  # a recorded owner that is gone
    dead.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (dead / ".owner").write_text(f"{proc.pid} {socket.gethostname()}\n")
    live = out / ".ds.partial-live"  # a conversion still running (this test's parent)
    live.mkdir()
    (live / ".owner").write_text(f"{os.getppid()} {socket.gethostname()}\n")
    other = out / ".other.partial-x"  # another dataset's: not ours to touch
    other.mkdir()
    logged = []
    Converter("amazon", str(reviews), None, str(out), "ds", progress=False, log=logged.append).convert()
    assert sorted(os.listdir(out)) == [".ds.partial-live", ".other.partial-x", "ds"]
    assert any("removed 2 unfinished folder(s)" in line for line in logged)
    assert sorted(os.listdir(out / "ds")) == sorted(f for f in os.listdir(out / "ds") if not f.startswith("."))


def test_input_errors_are_value_errors_and_one_line():
    for cls in (ConfigValueError, AtomicFileError, DatasetSplitError):
        err = cls("a\nb   c")
        assert isinstance(err, InputError) and isinstance(err, ValueError) and str(err) == "a b c"
