"""Bad inputs through the CLI, and kills/concurrency (issue 11); writes results/reliability.md.

Each bad input below runs ``python run_recbole.py ...`` in a scratch folder with a timeout, and
the outcome is classified:

* ``clean error``          exit 2, one ``error: ...`` line, no traceback, nothing trained
* ``message in traceback`` a traceback whose last line names the problem
* ``unhelpful traceback``  a traceback that does not (``, after training`` when a model trained first)
* ``silent wrong result``  the run finished (or ran on until the timeout) as if nothing were wrong
* ``ok``                   a case that must run: it ran and said what it should (``warned`` / ``said``)

The kill and concurrency scenarios come from ``benchmarks/reliability_faults.py`` when present; the
CLI ones (Ctrl-C / SIGTERM to a run, two comparisons sharing a results file) are below.

    python benchmarks/reliability.py                     # everything; ~10 min on 2 CPU cores (--jobs 2)
    python benchmarks/reliability.py --only metric       # the cases whose id holds 'metric'
    python benchmarks/reliability.py --code /tmp/old     # the bad inputs against another checkout
    python benchmarks/reliability.py --no-faults --out /tmp/r.md
"""

import argparse
import concurrent.futures
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
LOAD_ALL = "load_col: {inter: [user_id, item_id, rating, timestamp]}\n"
PWNED = "PWNED"  # a file the code-injection cases try to create
DATA = os.path.join(ROOT, "dataset")
LATIN1_ROW = "caf\u00e9\ti1\t4\t5\n".encode("latin-1")  # a user id with a Latin-1 byte


# ----------------------------------------------------------------------------- scratch data
def _rows(n_users=20, per_user=6, n_items=15):
    import random

    rng = random.Random(0)
    return [f"u{u}\ti{i}\t4\t{1000 + 10 * u + i}" for u in range(n_users) for i in rng.sample(range(n_items), per_user)]


def _dataset(work, name, lines=None, text=None, more=None, load=LOAD_ALL):
    """``<work>/data/<name>/<name>.inter`` from ``lines`` or ``text`` (str or bytes), ``more``
    other atomic files ``{ext: text}``, and ``load`` as the config file; returns Pop's arguments."""
    folder = os.path.join(work, "data", name)
    os.makedirs(folder, exist_ok=True)
    inter = text if text is not None else "".join(line + "\n" for line in lines)
    for ext, data in {"inter": inter, **(more or {})}.items():
        _file(folder, data, f"{name}.{ext}")
    cfg = _file(work, load, "load.yaml")
    return ["--model=Pop", f"--dataset={name}", f"--data_path={os.path.join(work, 'data')}", f"--config_files={cfg}"]


def _file(work, text, name="my.yaml"):
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _short_rows():
    lines = [HEADER] + _rows()
    lines[3] = "u1\ti3"  # rating and timestamp missing
    lines[9] = "u2"  # no item
    return lines


def _replace_line(lines, i, old, new):
    lines = list(lines)
    lines[i] = lines[i].replace(old, new)
    return lines


def _na_ids():
    """The first 10 rows' users and the next 10 rows' items spelt as pandas' default NA values."""
    rows = [row.split("\t") for row in _rows()]
    for n in range(20):
        rows[n][n // 10] = ["NA", "null", "None", "nan", "N/A"][n % 5]
    return [HEADER] + ["\t".join(row) for row in rows]


def _latin1(work, *extra):
    """bad.inter: the default rows, then one with a Latin-1 byte (line 122)."""
    text = "".join(line + "\n" for line in [HEADER] + _rows()).encode() + LATIN1_ROW
    return _dataset(work, "bad", text=text) + list(extra)


# ----------------------------------------------------------------------------- the bad inputs
# (id, kind, arguments or a function(work) -> arguments, words a helpful message holds, expect)
# expect: "error" (must stop before training with a one-line message), "warn:<text>" (must run
# and warn) or "ok[:<text>]" (must run, and say <text>). BPR runs with --epochs=1 wherever epochs
# is not the subject; CLLM4Rec (T) on the tiny random backbone, one epoch a stage, where it would build.
B = ["--model=BPR", "--epochs=1"]
C = ["--model=CLLM4Rec"]
T = C + ["--llm_path=tiny-random", "--autocast=fp32", "--pretrain_epochs=1", "--content_warmup_epochs=0"]
T += ["--epochs=1", "--max_doc_items=16"]
A = ["--model=AlphaRec"]
INTERS = "ok:The number of inters: 120"  # RecBole's dataset summary: all 120 rows of _rows() kept
CASES = [
    # wrong types and ranges
    ("epochs_abc", "type", ["--model=BPR", "--epochs=abc"], ["epochs"], "error"),
    ("epochs_negative", "range", ["--model=BPR", "--epochs=-1"], ["epochs"], "error"),
    ("epochs_huge_exponent", "type", ["--model=BPR", "--epochs=1e9"], ["epochs"], "error"),
    ("epochs_fraction", "type", ["--model=BPR", "--epochs=2.5"], ["epochs"], "error"),
    ("epochs_expression", "type", ["--model=BPR", "--epochs=1+1"], ["epochs"], "error"),
    ("learning_rate_negative", "range", B + ["--learning_rate=-1"], ["learning_rate", "learning rate"], "error"),
    ("learning_rate_zero", "range", B + ["--learning_rate=0"], ["learning_rate"], "error"),
    ("learning_rate_word", "type", B + ["--learning_rate=fast"], ["learning_rate", "fast"], "error"),
    ("train_batch_size_zero", "range", B + ["--train_batch_size=0"], ["train_batch_size", "batch"], "error"),
    ("train_batch_size_word", "type", B + ["--train_batch_size=abc"], ["train_batch_size"], "error"),
    ("eval_batch_size_negative", "range", B + ["--eval_batch_size=-1"], ["eval_batch_size"], "error"),
    ("topk_zero", "range", B + ["--topk=0"], ["topk"], "error"),
    ("topk_negative_in_list", "range", B + ["--topk=[10,-5]"], ["topk"], "error"),
    ("topk_word", "type", B + ["--topk=ten"], ["topk"], "error"),
    ("stopping_step_negative", "range", B + ["--stopping_step=-1"], ["stopping_step"], "error"),
    ("eval_step_word", "type", B + ["--eval_step=often"], ["eval_step"], "error"),
    ("weight_decay_negative", "range", B + ["--weight_decay=-1"], ["weight_decay"], "error"),
    ("embedding_size_zero", "range", B + ["--embedding_size=0"], ["embedding_size"], "error"),
    ("seed_word", "type", B + ["--seed=abc"], ["seed"], "error"),
    ("seed_above_2_32", "range", B + ["--seed=4294967296"], ["seed"], "error"),
    ("embedding_size_huge", "range", B + ["--embedding_size=1000000000"], ["embedding_size"], "error"),
    ("show_progress_word", "type", B + ["--show_progress=maybe"], ["show_progress"], "error"),
    ("learner_typo", "choice", B + ["--learner=adamm"], ["learner", "adamm"], "error"),
    ("state_unknown_level", "choice", B + ["--state=LOUD"], ["state", "LOUD"], "error"),
    ("dropout_above_one", "range", ["--model=MultiVAE", "--epochs=1", "--dropout_prob=1.5"], ["dropout"], "error"),
    ("mask_ratio_two", "range", C + ["--mask_ratio=2"], ["mask_ratio"], "error"),
    ("pretrain_batch_size_word", "type", C + ["--pretrain_batch_size=abc"], ["pretrain_batch_size"], "error"),
    ("readout_unknown", "choice", C + ["--readout=middle"], ["readout"], "error"),
    ("autocast_unknown", "choice", C + ["--autocast=fp8"], ["autocast"], "error"),
    ("max_doc_items_zero", "range", C + ["--max_doc_items=0"], ["max_doc_items"], "error"),
    ("pretrain_epochs_negative", "range", C + ["--pretrain_epochs=-1"], ["pretrain_epochs"], "error"),
    ("lora_rank_negative", "range", T + ["--lora_rank=-2"], ["lora_rank"], "error"),
    ("readout_layers_above_depth", "range", T + ["--readout_layers=999"], ["readout_layers"], "error"),
    ("tau_zero", "range", A + ["--tau=0"], ["tau"], "error"),
    ("text_pooling_unknown", "choice", A + ["--text_pooling=median"], ["text_pooling", "median"], "error"),
    ("code_in_value", "injection", B + ["--seed=__import__('os').system('touch PWNED') or 1"], ["seed"], "error"),
    # nan / inf for a float key
    ("learning_rate_inf", "non-finite", B + ["--learning_rate=.inf"], ["finite"], "error"),
    ("weight_decay_nan", "non-finite", B + ["--weight_decay=nan"], ["finite"], "error"),
    # processes and devices
    ("nproc_zero", "launch", ["--model=Pop", "--nproc=0"], ["nproc"], "error"),
    ("gpu_id_absent", "launch", B + ["--gpu_id=5"], ["GPU"], "error"),
    # a flag or key given twice (the last one used to win silently)
    ("flag_given_twice", "given twice", ["--model=BPR", "-m", "Pop"], ["given twice"], "error"),
    ("override_given_twice", "given twice", B + ["--epochs=2"], ["given twice"], "error"),
    (
        "yaml_key_given_twice",
        "given twice",
        lambda w: ["--model=Pop", "--config_files=" + _file(w, "epochs: 3\nlearning_rate: 0.01\nepochs: 5\n")],
        ["twice"],
        "error",
    ),
    # unknown keys
    ("key_epoch", "unknown key", ["--model=BPR", "--epoch=1"], ["epoch"], "error"),
    ("key_learnign_rate", "unknown key", B + ["--learnign_rate=5"], ["learnign_rate"], "error"),
    ("key_topK", "unknown key", B + ["--topK=5"], ["topK"], "error"),
    ("key_valid_metrics", "unknown key", B + ["--valid_metrics=Recall@10"], ["valid_metrics"], "error"),
    ("key_train_batchsize", "unknown key", B + ["--train_batchsize=64"], ["train_batchsize"], "error"),
    ("key_wrong_case", "unknown key", B + ["--Learning_Rate=0.1"], ["Learning_Rate"], "error"),
    ("key_code_injection", "injection", B + ["--x=__import__('os').system('touch PWNED')"], ["'x'"], "error"),
    # metrics and top-k
    ("metric_unknown", "metrics", B + ["--metrics=[Recall,NDCGG]"], ["NDCGG"], "error"),
    ("valid_metric_not_in_metrics", "metrics", B + ["--valid_metric=MAP@10"], ["MAP@10", "map"], "error"),
    ("valid_metric_k_not_in_topk", "metrics", B + ["--valid_metric=NDCG@5"], ["NDCG@5", "ndcg@5"], "error"),
    ("valid_metric_without_k", "metrics", B + ["--valid_metric=NDCG"], ["NDCG", "ndcg"], "error"),
    ("metrics_empty", "metrics", B + ["--metrics=[]"], ["metrics"], "error"),
    ("metrics_mixed_kinds", "metrics", B + ["--metrics=[Recall,RMSE]"], ["RMSE", "Ranking", "value"], "error"),
    ("topk_above_items", "metrics", B + ["--topk=[10,5000]"], ["5000", "topk", "k out of range"], "error"),
    (
        "topk_above_items_cllm4rec",
        "metrics",
        T + ["--topk=[10,5000]", "--readout_layers=1"],
        ["5000", "topk", "k out of range"],
        "error",
    ),
    # eval_args
    ("split_unknown_kind", "eval_args", B + ["--eval_args={split: {XS: [0.8,0.2]}}"], ["split", "XS"], "error"),
    ("split_negative_ratio", "eval_args", B + ["--eval_args={split: {RS: [0.8,-0.1,0.3]}}"], ["RS", "ratio"], "error"),
    ("order_unknown", "eval_args", B + ["--eval_args={order: XO}"], ["order", "XO"], "error"),
    ("mode_unknown", "eval_args", B + ["--eval_args={mode: most}"], ["mode", "most"], "error"),
    ("eval_args_not_a_dict", "eval_args", B + ["--eval_args=RS"], ["eval_args"], "error"),
    ("split_without_test_set", "eval_args", B + ["--eval_args={split: {RS: [0.9,0.1,0.0]}}"], ["test"], "error"),
    # models
    ("model_comma_only", "model", ["--model=,"], ["model"], "error"),
    ("model_empty", "model", ["--model="], ["model"], "error"),
    ("model_typo", "model", ["--model=LightGNC", "--epochs=1"], ["LightGCN"], "error"),
    ("model_wrong_case", "model", ["--model=cllm4rec"], ["CLLM4Rec"], "error"),
    (
        "compare_with_bad_value",
        "model",
        ["--model=Pop,ItemKNN", "--epoch=1", "--results_file=r.md"],
        ["epoch"],
        "error",
    ),
    ("model_list_with_unknown", "model", ["--model=Pop,Nope", "--results_file=r.md"], ["Nope"], "error"),
    # datasets and paths
    ("dataset_missing", "dataset", B + ["--dataset=amazon-nope"], ["amazon-nope"], "error"),
    ("dataset_path_traversal", "dataset", B + ["--dataset=../ml-100k"], ["../ml-100k"], "error"),
    ("dataset_empty_name", "dataset", B + ["--dataset="], ["dataset"], "error"),
    ("dataset_name_overlong", "dataset", ["--model=Pop", "--dataset=" + "a" * 5000], ["bytes long"], "error"),
    ("dataset_non_ascii_name", "dataset", lambda w: _dataset(w, "donn\u00e9es", [HEADER] + _rows()), [], INTERS),
    (  # ml-100k's yaml ranks the top 20; this copy has 15 items
        "ml100k_own_data_path",
        "dataset",
        lambda w: _dataset(w, "ml-100k", [HEADER] + _rows()) + ["--topk=[5]", "--valid_metric=NDCG@5"],
        [],
        INTERS,
    ),
    (
        "data_path_missing",
        "dataset",
        B + ["--dataset=amazon-sample", "--data_path=/nonexistent"],
        ["/nonexistent"],
        "error",
    ),
    ("resume_file_missing", "path", B + ["--resume_file=nope.pth"], ["nope.pth"], "error"),
    ("pretrained_file_missing", "path", T + ["--pretrained_file=nope.pth"], ["nope.pth"], "error"),
    (
        "checkpoint_dir_a_file",
        "path",
        lambda w: ["--model=Pop", f"--checkpoint_dir={_file(w, 'a file', 'ckpt')}"],
        ["checkpoint_dir"],
        "error",
    ),
    # malformed atomic files
    ("inter_empty", "atomic file", lambda w: _dataset(w, "bad", text=""), ["bad.inter", "empty"], "error"),
    ("inter_header_only", "atomic file", lambda w: _dataset(w, "bad", [HEADER]), ["bad.inter", "no rows"], "error"),
    (
        "header_without_type",
        "atomic file",
        lambda w: _dataset(w, "bad", ["user_id\titem_id\trating\ttimestamp"] + _rows()),
        ["user_id", "type"],
        "error",
    ),
    (
        "header_unknown_type",
        "atomic file",
        lambda w: _dataset(w, "bad", [HEADER.replace("item_id:token", "item_id:tokn")] + _rows()),
        ["tokn"],
        "error",
    ),
    (
        "word_in_float_column",
        "atomic file",
        lambda w: _dataset(w, "bad", _replace_line([HEADER] + _rows(), 7, "\t4\t", "\tfour\t")),
        ["four", "line 8"],
        "error",
    ),
    (
        "inter_without_item_column",
        "atomic file",
        lambda w: _dataset(w, "bad", ["user_id:token\trating:float"] + [r.split("\t", 1)[0] + "\t4" for r in _rows()]),
        ["item_id"],
        "error",
    ),
    (
        "rows_missing_columns",
        "atomic file",
        lambda w: _dataset(w, "bad", _short_rows()),
        [],
        "warn:rows have fewer columns",
    ),
    (
        "no_user_long_enough",
        "split",
        lambda w: _dataset(w, "bad", [HEADER] + _rows(per_user=2)),
        ["split", "empty"],
        "error",
    ),
    # rows RecBole drops, fills or cannot use
    (
        "row_with_more_fields",
        "atomic file",
        lambda w: _dataset(w, "bad", _replace_line([HEADER] + _rows(), 6, "\t4\t", "\t4\tan extra\t")),
        ["line 7", "fields", "separator"],
        "error",
    ),
    (
        "float_values_missing",
        "atomic file",
        lambda w: _dataset(
            w, "bad", _replace_line(_replace_line([HEADER] + _rows(), 6, "\t4\t", "\t\t"), 8, "\t4\t", "\tnan\t")
        ),
        [],
        "warn:are empty or NA",
    ),
    (
        "item_rows_repeated",
        "atomic file",
        lambda w: _dataset(
            w,
            "bad",
            [HEADER] + _rows(),
            more={
                "item": "item_id:token\ttitle:token_seq\n"
                + "".join(f"i{i}\tthing {i}\n" for i in range(15))
                + "i3\tother\n"
            },
            load="load_col: {inter: [user_id, item_id, rating, timestamp], item: [item_id, title]}\n",
        ),
        [],
        "warn:have more than one row",
    ),
    (
        "user_with_every_item",
        "atomic file",
        lambda w: _dataset(w, "bad", [HEADER] + _rows() + [f"u0\ti{i}\t4\t{5000 + i}" for i in range(15)]),
        ["every one of its 15 items", "user_inter_num_interval"],
        "error",
    ),
    # atomic files as a whole: ids, columns, encodings, size, feature files
    ("ids_spelt_na", "atomic file", lambda w: _dataset(w, "na", _na_ids()), [], INTERS),
    (
        "column_named_twice",
        "atomic file",
        lambda w: _dataset(w, "bad", [HEADER.replace("rating:float", "user_id:token")] + _rows()),
        ["user_id", "twice"],
        "error",
    ),
    (
        "id_declared_float",
        "atomic file",
        lambda w: _dataset(w, "bad", [HEADER.replace("user_id:token", "user_id:float")] + [r[1:] for r in _rows()]),
        ["user_id:float", ":token"],
        "error",
    ),
    ("latin1_byte_in_inter", "encoding", _latin1, ["utf-8", "UTF-8"], "error"),
    (
        "latin1_inter_with_encoding",
        "encoding",
        lambda w: _latin1(w, "--encoding=latin-1"),
        [],
        "ok:The number of inters: 121",
    ),
    (
        "latin1_byte_in_yaml",
        "encoding",
        lambda w: ["--model=Pop", "--config_files=" + _file(w, "# r\u00e9glages\nepochs: 1\n".encode("latin-1"))],
        ["utf-8", "UTF-8"],
        "error",
    ),
    (
        "one_user",
        "too small",
        lambda w: _dataset(w, "bad", [HEADER] + [f"u0\ti{i}\t4\t{1000 + i}" for i in range(9)]),
        ["1 user", "2 users"],
        "error",
    ),
    (
        "filters_leave_nothing",
        "too small",
        lambda w: _dataset(w, "bad", [HEADER] + _rows()) + ["--user_inter_num_interval=[50,inf)"],
        ["0 user", "filters"],
        "error",
    ),
    (
        "item_file_lacking_ids",
        "feature file",
        lambda w: _dataset(
            w,
            "bad",
            [HEADER] + _rows(),
            more={"item": "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tthing {i}\n" for i in range(4))},
            load="load_col: {inter: [user_id, item_id, rating, timestamp], item: [item_id, title]}\n",
        ),
        ["bad.item", "no row"],
        "error",
    ),
    # config files
    ("config_file_missing", "config file", B + ["--config_files=nope.yaml"], ["nope.yaml"], "error"),
    (
        "config_file_bad_yaml",
        "config file",
        lambda w: B + [f"--config_files={_file(w, 'learning_rate: [0.1')}"],
        ["yaml"],
        "error",
    ),
    (
        "config_file_a_list",
        "config file",
        lambda w: B + [f"--config_files={_file(w, '- epochs: 1')}"],
        ["key: value", "list"],
        "error",
    ),
    (
        "config_file_unknown_key",
        "config file",
        lambda w: B + [f"--config_files={_file(w, 'learnign_rate: 0.01')}"],
        ["learnign_rate"],
        "error",
    ),
    (
        "config_file_wrong_type",
        "config file",
        lambda w: ["--model=BPR", f"--config_files={_file(w, 'epochs: abc')}"],
        ["epochs"],
        "error",
    ),
    ("config_file_empty", "config file", lambda w: ["--model=Pop", f"--config_files={_file(w, '')}"], [], "ok"),
    (
        "config_file_interval_string",
        "config file",
        lambda w: _dataset(w, "iv", [HEADER] + _rows(), load=LOAD_ALL + 'user_inter_num_interval: "[0,60]"\n'),
        [],
        INTERS,
    ),
    # command-line syntax
    ("override_without_equals", "syntax", B + ["--learning_rate", "0.01"], ["learning_rate"], "error"),
]


# ----------------------------------------------------------------------------- running one case
# RecBole's "epoch 0 training [time: ...]" and CLLM4Rec's "<stage> epoch 1" log lines
TRAINED = re.compile(r"epoch \d+ training|[a-z_]+ epoch \d+")


def classify(rc, out, err, words, expect, timed_out, work):
    text = re.sub(r"\x1b\[[0-9;]*m", "", out + err)  # RecBole colours its console log
    trained = bool(TRAINED.search(text))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if os.path.exists(os.path.join(work, PWNED)):
        return "silent wrong result", "code in a config value ran"
    if expect.startswith(("warn:", "ok")):
        must, _, wanted = expect.partition(":")
        if rc == 0 and wanted in text:
            line = next(line for line in text.splitlines() if wanted in line) if wanted else "(exit 0)"
            return "ok", ("warned: " if must == "warn" else "ran: ") + line.split("WARNING", 1)[-1].strip()[:160]
        if rc == 0:
            return "silent wrong result", "ran without a warning" if must == "warn" else f"ran, never saying {wanted!r}"
        return ("message in traceback" if "Traceback" in text else "unhelpful traceback"), last[:160]
    if timed_out:
        return "silent wrong result", "ran on until the timeout" + (" (training)" if trained else "")
    if rc == 0:
        return "silent wrong result", "finished with exit 0" + (" after training" if trained else "")
    if "Traceback" not in text and last.startswith("error:") and len(lines) and rc == 2:
        if trained:
            return "message in traceback", "one-line error, but after training: " + last[:140]
        return "clean error", last[:200]
    helpful = any(w.lower() in last.lower() for w in words)
    suffix = ", after training" if trained else ""
    if "Traceback" not in text:  # a message over several lines, argparse's usage, a bare exit
        return ("message in traceback" if helpful else "unhelpful traceback"), f"exit {rc}{suffix}: {last[:160]}"
    if helpful:
        return "message in traceback", last[:160] + suffix
    return "unhelpful traceback", last[:160] + suffix


def _command(code_root, work, args):
    """The CLI call: ``args``, then ``--show_progress=False`` and ``--checkpoint_dir=<work>/saved``
    unless ``args`` set them (a key given twice is an error)."""
    given = {a.split("=", 1)[0] for a in args}
    defaults = ["--show_progress=False", f"--checkpoint_dir={os.path.join(work, 'saved')}"]
    extra = [d for d in defaults if d.split("=", 1)[0] not in given]
    return [sys.executable, os.path.join(code_root, "run_recbole.py"), *args, *extra]


def run_case(case, code_root, timeout):
    name, kind, args, words, expect = case
    work = tempfile.mkdtemp(prefix=f"rel-{name}-")
    try:
        args = args(work) if callable(args) else list(args)
        cmd = _command(code_root, work, args)
        start = time.time()
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
            rc, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            rc, timed_out = None, True
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        outcome, detail = classify(rc, out, err, words, expect, timed_out, work)
        shown = " ".join(a if len(a) < 70 else a[:67] + "..." for a in args)
        shown = shown.replace(work + os.sep, "<tmp>/").replace(work, "<tmp>")
        return {
            "id": name,
            "kind": kind,
            "args": shown,
            "outcome": outcome,
            "detail": detail.replace(work, "<tmp>"),
            "rc": rc,
            "seconds": round(time.time() - start, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- faults (items 1-7)
# ~100 BPR epochs a second on amazon-sample, no validation before epoch 100: a signal lands mid-training
LONG_BPR = ["--dataset=amazon-sample", f"--data_path={DATA}", "--epochs=3000", "--stopping_step=1000"]
LONG_BPR += ["--eval_step=100", "--state=WARNING"]


def _start(work, args):
    """The CLI (this checkout's) in a session of its own, so that ``_stop`` reaches it and its worker."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(_command(ROOT, work, args), cwd=work, env=env, text=True, start_new_session=True, **pipes)


def _stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def gone(pid, timeout=30):
    """Whether ``pid`` exits within ``timeout`` (a zombie counts as gone)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False


def _signalled(work, models, sig, *more):
    """``sig`` to a CLI run of ``models`` (a comparison trains in a worker, ``--nproc=2`` in two
    ranks) once a BPR epoch has finished: one ``interrupted:`` line with a --resume_file hint,
    exit 128 + sig, no worker left."""
    name = f"{signal.Signals(sig).name} to a running {models} {'comparison' if ',' in models else 'training'}"
    name += f" ({' '.join(['CLI', *more])})"
    extra = [f"--results_file={os.path.join(work, 'r.md')}"] if "," in models else []
    extra += list(more)
    proc = _start(work, [f"--model={models}", *LONG_BPR, *extra])
    try:
        deadline = time.time() + 150
        while not glob.glob(os.path.join(work, "saved", "*-last.pth")):
            if proc.poll() is not None or time.time() > deadline:
                return name, f"failed: no epoch finished (exit {proc.poll()})"
            time.sleep(0.2)
        last = glob.glob(os.path.join(work, "saved", "*-last.pth"))[0]
        worker = int(os.path.basename(last).rsplit("-", 3)[1])  # <Model>-<time>-<pid>-<hex>-last.pth
        time.sleep(0.5)  # well into the next epochs
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=90)
        lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
        problems = [f"exit {proc.returncode}, not {128 + sig}"] if proc.returncode != 128 + sig else []
        if "Traceback" in err or len(lines) != 1:
            problems.append(f"{len(lines)} 'interrupted:' line(s)" + (", a traceback" if "Traceback" in err else ""))
        elif f"--resume_file={last}" not in lines[0]:
            problems.append("no --resume_file hint: " + lines[0][:120])
        if worker != proc.pid and not gone(worker):
            problems.append(f"its worker {worker} outlived it")
        if problems:
            return name, "failed: " + "; ".join(problems)
        return name, f"ok: exit {proc.returncode}; {lines[0].replace(work, '<tmp>')[:160]}"
    except subprocess.TimeoutExpired:
        return name, f"failed: still running 90 s after {signal.Signals(sig).name}"
    finally:
        _stop(proc)


def scenario_cli_ctrl_c(work):
    return _signalled(work, "BPR", signal.SIGINT)


def scenario_cli_sigterm_comparison(work):
    return _signalled(work, "BPR,Pop", signal.SIGTERM)


def scenario_cli_ctrl_c_two_ranks(work):
    return _signalled(work, "BPR", signal.SIGINT, "--nproc=2")


def scenario_cli_shared_results_file(work):
    """Two comparisons started together with one --results_file: the table keeps all four rows."""
    name = "two CLI comparisons at once, one --results_file"
    path = os.path.join(work, "shared.md")
    runs = [["Pop", "ItemKNN"], ["BPR", "LightGCN"]]
    args = ["--epochs=1", "--dataset=amazon-sample", f"--data_path={DATA}", "--state=WARNING"]
    procs = [_start(work, [f"--model={','.join(models)}", *args, f"--results_file={path}"]) for models in runs]
    try:
        errs = [proc.communicate(timeout=300)[1] for proc in procs]
    except subprocess.TimeoutExpired:
        return name, "failed: still running after 300 s"
    finally:
        for proc in procs:
            _stop(proc)
    failed = [err for proc, err in zip(procs, errs) if proc.returncode]
    if failed:
        return name, f"failed: exit {[p.returncode for p in procs]}: {failed[0].strip()[-120:]}"
    with open(path, encoding="utf-8") as f:
        cells = {line.split("|")[1].strip() for line in f if line.startswith("|")}
    lost = [m for models in runs for m in models if m not in cells]
    return name, f"failed: rows lost: {', '.join(lost)}" if lost else "ok: all 4 rows kept"


CLI_SCENARIOS = [
    scenario_cli_ctrl_c,
    scenario_cli_sigterm_comparison,
    scenario_cli_ctrl_c_two_ranks,
    scenario_cli_shared_results_file,
]


def run_faults():
    """Rows from ``benchmarks/reliability_faults.py`` (written beside this script), if present,
    then the CLI scenarios above."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    rows, scenarios = [], []
    try:
        import reliability_faults

        scenarios = getattr(reliability_faults, "SCENARIOS", None) or [
            getattr(reliability_faults, n) for n in dir(reliability_faults) if n.startswith("scenario_")
        ]
    except ImportError as err:
        rows.append(("(fault scenarios)", f"not run: {err}"))
    for scenario in [*scenarios, *CLI_SCENARIOS]:
        work = tempfile.mkdtemp(prefix="rel-fault-")
        start = time.time()
        try:
            name, outcome = scenario(work)
        except Exception as err:  # a scenario that breaks is a row, not the end of the report
            name, outcome = scenario.__name__.replace("scenario_", ""), f"failed: {type(err).__name__}: {err}"
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append((name, f"{outcome} ({time.time() - start:.0f} s)"))
    return rows


# ----------------------------------------------------------------------------- report
OUTCOMES = ["clean error", "ok", "message in traceback", "unhelpful traceback", "silent wrong result"]


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(path, rows, faults, command, code_root, seconds, reused=()):
    import torch

    counts = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    lines = [
        "# Reliability: bad inputs and faults (issue 11)",
        "",
        f"Every bad input runs `python run_recbole.py ...` in a scratch folder (code: `{code_root}`), "
        "with `--show_progress=False` and a per-case `--checkpoint_dir`; fast models (BPR with "
        "`--epochs=1`, Pop) wherever a run could train. Outcomes: **clean error** = exit 2, one "
        "`error: ...` line, no traceback, nothing trained; **ok** = a case that must run did, with "
        "the warning or the row count it owes; **message in traceback** / **unhelpful traceback** = a "
        "traceback whose last line does / does not name the problem; **silent wrong result** = it ran "
        "(or ran on to the timeout) as if nothing were wrong, or code in a config value ran.",
        "",
        "Reproduce (every case and scenario; ~12 min on 2 CPU cores):",
        "",
        "    python benchmarks/reliability.py",
        "",
        *(
            ["This file was written by:", "", f"    {command}", ""]
            if command.strip() != "python benchmarks/reliability.py"
            else []
        ),
        "On the code before these fixes (the last commit, unpacked with `git archive`), each of the 13 "
        "CLI cases of `tests/test_reliability_inputs.py` (a sample of the rows below) failed: a "
        "traceback, often after training, an unknown key ignored, or no warning.",
        "",
        f"Machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}; {len(rows) - len(reused)} inputs in {seconds / 60:.1f} min."
        + (
            f" The other {len(reused)} rows (and the fault rows) are the earlier full run's "
            f"(`python benchmarks/reliability.py`), taken over with `--reuse`; the fixes made after that run touch only the cases rerun here."
            if reused
            else ""
        ),
        "",
        "## Summary",
        "",
        "| outcome | inputs |",
        "|---|---|",
        *[f"| {o} | {counts[o]} |" for o in OUTCOMES],
        "",
        "## Bad inputs",
        "",
        "| # | case | kind | arguments | outcome | what the user saw | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | {r['id']} | {r['kind']} | `{_cell(r['args'])}` | {r['outcome']} | "
            f"{_cell(r['detail'])} | {r['seconds']} |"
        )
    lines += ["", "## Kills, signals and concurrency (benchmarks/reliability_faults.py; the CLI's last)", ""]
    if faults:
        lines += ["| scenario | outcome |", "|---|---|", *[f"| {n} | {_cell(o)} |" for n, o in faults]]
    else:
        lines.append("Not run (`--no-faults`).")
    lines.append("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "reliability.md"))
    parser.add_argument("--only", default=None, help="run the cases whose id holds this text")
    parser.add_argument("--code", default=ROOT, help="checkout whose run_recbole.py is tried (default: this one)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per case")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (each is one CLI process)")
    parser.add_argument("--no-faults", action="store_true", help="skip the kill/concurrency scenarios")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--reuse",
        default=None,
        help="an earlier run's --json: its rows stand for the cases not run now "
        "(and its fault rows with --no-faults); the report says which",
    )
    args = parser.parse_args(argv)

    only = [o for o in (args.only or "").split(",") if o]
    cases = [c for c in CASES if not only or any(o in c[0] for o in only)]
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_case, case, os.path.abspath(args.code), args.timeout) for case in cases]
        rows = []
        for future in futures:
            row = future.result()
            print(f"{row['id']:32s} {row['outcome']:22s} {row['seconds']:6.1f}s  {row['detail'][:110]}", flush=True)
            rows.append(row)
    reused = []
    if args.reuse:
        with open(args.reuse, encoding="utf-8") as f:
            earlier = json.load(f)
        fresh = {r["id"]: r for r in rows}
        old = {r["id"]: r for r in earlier["inputs"]}
        reused = [c[0] for c in CASES if c[0] not in fresh and c[0] in old]
        rows = [fresh.get(c[0]) or old[c[0]] for c in CASES if c[0] in fresh or c[0] in old]
    faults = (
        [tuple(f) for f in earlier["faults"]]
        if args.reuse and args.no_faults
        else ([] if args.no_faults else run_faults())
    )
    for name, outcome in faults:
        print(f"{name:32s} {outcome}", flush=True)
    command = "python benchmarks/reliability.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    write_report(
        args.out,
        rows,
        faults,
        command,
        os.path.relpath(os.path.abspath(args.code), ROOT) or ".",
        time.time() - start,
        reused,
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"inputs": rows, "faults": faults}, f, indent=1)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
