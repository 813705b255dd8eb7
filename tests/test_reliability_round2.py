"""Reliability, round 2: comparisons sharing a results file all keep their rows; an unwritable
results file falls back to a file the CLI names, with the reason; Ctrl-C / SIGTERM stop a run (and
a comparison's worker) with one ``interrupted:`` line, and a worker dies with its parent.

Signal cases run the real CLI on BPR over the shipped amazon-sample (about 10 s CPU each)."""

import glob
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from recbole_cllm4rec import quick_start as qs
from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from reliability import gone  # noqa: E402  (a zombie nobody reaps counts as gone)

DATA = os.path.join(ROOT, "dataset")
CLI = os.path.join(ROOT, "run_recbole.py")
# ~100 epochs a second (no validation until epoch 100): a signal lands mid-training; Pop trains 1 epoch anyway
LONG_BPR = ["--dataset=amazon-sample", f"--data_path={DATA}", "--epochs=3000", "--stopping_step=1000"]
LONG_BPR += ["--eval_step=100", "--show_progress=False", "--state=WARNING"]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, PR_SET_PDEATHSIG")


def fake(model, ndcg, protocol="dataset x, seed 1"):
    """A finished row as ``run`` returns it, without training anything."""
    metrics = {"ndcg@10": ndcg}
    return {
        "model": model,
        "protocol": protocol,
        "test_result": metrics,
        "best_valid_result": metrics,
        "train_time_s": 1.0,
        "total_time_s": 2.0,
        "peak_rss_mb": 100.0,
    }


def table_rows(path):
    """model -> its line in the main table."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows[line.split("|")[1].strip()] = line
    return rows


# ---- 1. a results file keeps every run's rows ------------------------------------------------------
def test_rows_of_other_runs_are_kept_and_a_rerun_replaces_its_row(tmp_path):
    path = str(tmp_path / "r.md")
    qs.write_results(path, [fake("Pop", 0.1)], "x: Pop", ["python run_recbole.py --model=Pop"])
    reason = "ValueError: a | b --> c"  # '|' would split a cell, '-->' would end the rows' comment
    other = [fake("BPR", 0.2, protocol="dataset x, seed 2"), {"model": "Broken", "failed": reason}]
    qs.write_results(path, other, "x: BPR, Broken", ["python run_recbole.py --model=BPR,Broken"])
    qs.write_results(path, [fake("Pop", 0.3)], "x: Pop", ["python run_recbole.py --model=Pop"])

    rows = table_rows(path)
    assert list(rows) == ["Pop", "BPR", "Broken"]  # the rerun's row stays where Pop's was, once
    assert "0.3000" in rows["Pop"] and "0.1000" not in rows["Pop"] and "0.2000" in rows["BPR"]
    assert "failed: ValueError: a / b --> c" in rows["Broken"]
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# x: Pop; x: BPR, Broken\n")
    assert "    python run_recbole.py --model=Pop\n" in text and "--model=BPR,Broken" in text
    # rows under another protocol are labelled, not passed off as one comparison
    assert "- Pop: dataset x, seed 1." in text and "- BPR: dataset x, seed 2." in text
    assert [e["result"].get("failed") for e in qs.read_rows(path)] == [None, None, reason]
    assert not glob.glob(str(tmp_path / "*.tmp"))


def test_a_table_without_rows_to_merge_is_kept_below_the_new_one_with_a_warning(tmp_path, capsys):
    path = tmp_path / "old.md"
    old = "# an older version's table\n\n| model | test ndcg@10 |\n|---|---|\n| EASE | 0.3 |\n\nEASE is ahead.\n"
    path.write_text(old)
    qs.write_results(str(path), [fake("Pop", 0.1)], "x: Pop", ["cmd"])
    assert list(table_rows(path)) == ["Pop"]
    text = path.read_text()
    assert old.strip() in text and text.index("| Pop |") < text.index("| EASE | 0.3 |")  # nothing lost
    assert text.rstrip("\n").splitlines()[-1].startswith(qs.ROWS_MARK)  # the rows stay mergeable
    assert "holds no rows this version can merge" in capsys.readouterr().err


def test_notes_written_into_a_results_file_survive_every_later_merge(tmp_path):
    path = tmp_path / "r.md"
    qs.write_results(str(path), [fake("Pop", 0.1), fake("BPR", 0.2)], "x: Pop, BPR", ["cmd"])
    lines = path.read_text().splitlines()
    table_end = lines.index(table_rows(path)["BPR"]) + 1
    lines[table_end:table_end] = ["", "Why BPR wins: more epochs.", "", "- a list item"]
    lines.append("A note written after the rows line.")
    path.write_text("\n".join(lines) + "\n")
    for score in (0.3, 0.4):  # a rerun of one model, twice: the notes stay, once each
        qs.write_results(str(path), [fake("Pop", score)], "x: Pop", ["cmd"])
    text = path.read_text()
    notes = ["Why BPR wins: more epochs.", "- a list item", "A note written after the rows line."]
    assert all(text.count(note + "\n") == 1 for note in notes)
    assert "0.4000" in table_rows(path)["Pop"] and [e["result"]["model"] for e in qs.read_rows(str(path))] == [
        "Pop",
        "BPR",
    ]
    assert text.rstrip("\n").splitlines()[-1].startswith(qs.ROWS_MARK)


_WRITER = """
import os, sys, time
sys.path.insert(0, {root!r})
from recbole_cllm4rec import quick_start as qs
from tests.test_reliability_round2 import fake

read = qs.read_rows
def slow_read(path):  # widen the read-to-replace window, so an unlocked writer would lose rows
    rows = read(path)
    time.sleep(0.15)
    return rows
qs.read_rows = slow_read
while not os.path.exists({go!r}):
    time.sleep(0.01)
name = sys.argv[1]
results = []
for i in range(4):  # as a comparison does: the rows so far, after every model
    results.append(fake(f"{{name}}{{i}}", 0.1 * i))
    qs.write_results({path!r}, results, "x: " + name, ["cmd " + name])
"""


def test_concurrent_comparisons_writing_one_file_keep_every_row(tmp_path):
    path, go = str(tmp_path / "shared.md"), str(tmp_path / "go")
    code = _WRITER.format(root=ROOT, go=go, path=path)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", code, name], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for name in ("A", "B")
    ]
    time.sleep(0.5)
    open(go, "w").close()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert sorted(table_rows(path)) == ["A0", "A1", "A2", "A3", "B0", "B1", "B2", "B3"]
    assert "cmd A" in open(path).read() and "cmd B" in open(path).read()


def test_a_failing_model_is_a_row_with_its_reason(workdir):
    row = qs._run_in_worker(("NoSuchModel", "amazon-sample", None, {"data_path": DATA}, True))
    assert row["failed"].startswith("ModelNotFoundError: unknown model 'NoSuchModel'")


# ---- 2. an unwritable results file: the path printed is the path written ---------------------------
def test_unwritable_results_file_falls_back_and_the_cli_prints_the_written_path(workdir, monkeypatch, capfd):
    (workdir / "blocked").write_text("a file where the results folder should be")
    requested = str(workdir / "blocked" / "r.md")
    monkeypatch.setattr(qs, "check_writable", lambda *args, **kwargs: None)  # the disk fills after the check
    monkeypatch.setattr(qs, "stop_on_signals", lambda: None)  # keep pytest's own SIGINT handling
    monkeypatch.setattr(tempfile, "tempdir", str(workdir))
    spec = importlib.util.spec_from_file_location("run_recbole_cli", CLI)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = ["--model=Pop", "--dataset=amazon-sample", f"--data_path={DATA}", "--show_progress=False"]
    code = cli.main([*args, "--state=WARNING", f"--results_file={requested}"])
    out, err = capfd.readouterr()
    assert code == 0, err
    fallback = glob.glob(str(workdir / "recbole_cllm4rec-*-r.md"))
    assert len(fallback) == 1 and "| Pop | 0." in open(fallback[0]).read()
    assert f"written to {fallback[0]}" in out and f"written to {requested}" not in out
    warnings = [line for line in err.splitlines() if line.startswith("warning: could not write")]
    assert warnings and all(requested in w and fallback[0] in w and "File exists" in w for w in warnings)


# ---- 3. Ctrl-C and SIGTERM: one line, exit 128 + signal, no worker left ----------------------------
def start_cli(workdir, model, *extra):
    cmd = [sys.executable, CLI, f"--model={model}", *LONG_BPR, f"--checkpoint_dir={workdir / 'saved'}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # a session of its own: killpg reaches it and its worker only (Ctrl-C signals the whole group)
    return subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for_training(workdir, proc, timeout=150):
    """(last-state file, pid of the process writing it) once an epoch has finished."""
    deadline = time.time() + timeout
    while not glob.glob(str(workdir / "saved" / "*-last.pth")):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"no epoch finished: {proc.communicate()}")
        time.sleep(0.2)
    last = glob.glob(str(workdir / "saved" / "*-last.pth"))[0]
    time.sleep(0.5)  # well into the next epochs
    return last, int(os.path.basename(last).rsplit("-", 3)[1])  # <Model>-<time>-<pid>-<hex>-last.pth


def stop(proc):
    """End what a test started (its own session only), whatever the test found."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def interrupted_lines(err):
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, err
    return lines[0]


@linux_only
def test_ctrl_c_in_a_run_is_one_line_saying_how_to_resume(workdir):
    proc = start_cli(workdir, "BPR")
    try:
        last, pid = wait_for_training(workdir, proc)
        assert pid == proc.pid  # one model: trained in the CLI's own process
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 130
    line = interrupted_lines(err)
    assert line.startswith("interrupted: BPR stopped; saved ") and f"--resume_file={last}" in line
    assert line.index("python run_recbole.py --model=BPR --dataset=amazon-sample") < line.index("--resume_file")
    assert os.path.isfile(last)


@linux_only
def test_ctrl_c_stops_a_comparison_and_its_training_worker(workdir):
    proc = start_cli(workdir, "BPR,Pop", f"--results_file={workdir / 'r.md'}")
    try:
        last, worker = wait_for_training(workdir, proc)
        assert worker != proc.pid
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = proc.communicate(timeout=90)
        assert gone(worker)
    finally:
        stop(proc)
    assert proc.returncode == 130
    line = interrupted_lines(err)  # the worker's own line, relayed by the parent
    assert line.startswith("interrupted: BPR stopped; saved ") and f"--resume_file={last}" in line
    assert line.endswith("; no model had finished")


@linux_only
def test_sigterm_to_a_comparison_stops_its_worker(workdir):
    proc = start_cli(workdir, "BPR,Pop", f"--results_file={workdir / 'r.md'}")
    try:
        last, worker = wait_for_training(workdir, proc)
        proc.send_signal(signal.SIGTERM)  # the parent only: it must stop the worker itself
        _, err = proc.communicate(timeout=90)
        assert gone(worker)
    finally:
        stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"--resume_file={last}" in interrupted_lines(err)


@linux_only
def test_a_worker_does_not_outlive_its_killed_parent(workdir):
    proc = start_cli(workdir, "BPR,Pop", f"--results_file={workdir / 'r.md'}")
    try:
        _, worker = wait_for_training(workdir, proc)
        proc.kill()  # SIGKILL: the parent cannot pass anything on
        proc.wait(timeout=30)  # (not communicate: a surviving worker holds the pipes open)
        assert gone(worker)
    finally:
        stop(proc)


@linux_only
def test_a_signal_to_the_worker_alone_fails_its_row_and_the_comparison_goes_on(workdir):
    results_file = workdir / "r.md"
    proc = start_cli(workdir, "BPR,Pop", f"--results_file={results_file}")
    try:
        last, worker = wait_for_training(workdir, proc)
        os.kill(worker, signal.SIGTERM)  # e.g. to skip a model: its row says so, the next one runs
        _, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 1 and "Traceback" not in err, err  # exit 1: a model failed
    rows = table_rows(results_file)
    assert "failed: interrupted: BPR stopped; saved " in rows["BPR"] and f"--resume_file={last}" in rows["BPR"]
    assert rows["Pop"].startswith("| Pop | 0.")


@linux_only
def test_ctrl_c_in_a_multi_process_run_is_one_line_and_leaves_no_rank(workdir):
    proc = start_cli(workdir, "BPR", "--nproc=2")
    try:
        last, rank0 = wait_for_training(workdir, proc, timeout=240)
        ranks = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        ]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the parent and both ranks
        _, err = proc.communicate(timeout=120)
        assert all(gone(pid) for pid in ranks + [rank0])
    finally:
        stop(proc)
    assert proc.returncode == 130, err
    line = interrupted_lines(err)
    assert line.startswith(f"interrupted: BPR's 2 ranks stopped; saved {last} (last finished epoch)"), line
    assert line.endswith(f"--nproc=2 --resume_file={last}") and "python run_recbole.py --model=BPR" in line, line
