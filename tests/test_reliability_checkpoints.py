"""Issue 11, items 1-7: checkpoints are never shared, lost, mixed up or used to run code; resume
goes on from the last finished epoch or stage; a comparison keeps every finished row.

Kill and concurrency tests run child processes through ``benchmarks/reliability_faults.py``
(BPR on the shipped amazon-sample, a few seconds each)."""

import glob
import hashlib
import os
import signal
import subprocess
import sys
import types

import pytest
import torch

import recbole_cllm4rec
from recbole_cllm4rec.checkpoint import CheckpointError, atomic_save, check_identity, load_checkpoint
from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import reliability_faults as faults  # noqa: E402

BPR = dict(faults.BPR, epochs=2, state="WARNING")


def bpr(config=None, **overrides):
    return recbole_cllm4rec.run("BPR", "amazon-sample", config_dict={**BPR, **(config or {}), **overrides})


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def saved_files(folder):
    return sorted(glob.glob(os.path.join(str(folder), "saved", "*.pth")))


# ---- 1. one run, one checkpoint, one log ---------------------------------------------------------
def test_two_processes_started_in_the_same_second_keep_their_own_files(workdir):
    name, outcome = faults.scenario_concurrent_same_second(str(workdir))
    assert outcome.startswith("ok"), outcome


def test_runs_in_one_process_in_the_same_second_keep_their_own_files(workdir, monkeypatch):
    import recbole.trainer.trainer as trainer_module
    import recbole.utils.logger as logger_module
    import recbole.utils.utils as utils_module

    for module in (utils_module, logger_module, trainer_module):
        monkeypatch.setattr(module, "get_local_time", lambda: "Jan-01-2030_00-00-00")
    first, second = bpr(learning_rate=0.001, state="INFO"), bpr(learning_rate=0.05, state="INFO")
    assert first["model_file"] != second["model_file"]
    assert [load_checkpoint(r["model_file"])["config"]["learning_rate"] for r in (first, second)] == [0.001, 0.05]
    logs = sorted(glob.glob(str(workdir / "log" / "BPR" / "*.log")), key=os.path.getmtime)
    assert len(logs) == 2 and all(os.path.getsize(p) > 0 for p in logs)  # the second run logs to its own file
    with open(logs[1]) as f:
        assert "learning_rate = 0.05" in f.read().replace("  ", " ")


# ---- 2. atomic writes; a resumed run writes new files ------------------------------------------
def test_kill_during_a_checkpoint_write_loses_no_checkpoint(workdir):
    name, outcome = faults.scenario_kill_during_save(str(workdir), n=3)
    assert outcome.startswith("ok"), outcome


class SignalsWhilePickled:
    """Sends this process ``signum`` from inside ``torch.save``'s writer, as Ctrl-C mid-save would."""

    def __init__(self, signum):
        self.signum = signum

    def __reduce__(self):
        os.kill(os.getpid(), self.signum)
        return (str, ("pickled",))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_checkpoint_write_waits_for_the_file(tmp_path, signum):
    # raised inside torch's C++ writer, the handler's exception aborts the process (seen in CI)
    def stop(sig, frame):
        raise KeyboardInterrupt(sig)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    path = tmp_path / "m.pth"
    try:
        signal.signal(signum, stop)
        with pytest.raises(KeyboardInterrupt) as stopped:
            atomic_save({"weights": torch.ones(3), "note": SignalsWhilePickled(signum)}, str(path))
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert stopped.value.args == (signum,)  # the user's own handler ran, once the file was in place
    saved = torch.load(path, weights_only=False)
    assert saved["note"] == "pickled" and torch.equal(saved["weights"], torch.ones(3))
    assert os.listdir(tmp_path) == ["m.pth"]  # no temporary left


def test_resume_never_touches_the_file_it_resumes_from(workdir):
    first = bpr(epochs=1)
    before = {p: digest(p) for p in saved_files(workdir)}
    resumed = bpr(epochs=2, resume_file=first["model_file"])
    assert resumed["model_file"] != first["model_file"] and os.path.isfile(resumed["model_file"])
    assert {p: digest(p) for p in before} == before
    assert resumed["best_valid_result"]  # the source's best result came along, not {}


# ---- 3. a checkpoint belongs to one model, dataset and split -----------------------------------
def test_resume_from_another_split_is_refused_before_anything_is_written(workdir):
    first = bpr(epochs=1)
    before = {p: digest(p) for p in saved_files(workdir)}
    other_split = {"eval_args": {"split": {"RS": [0.7, 0.2, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}}
    with pytest.raises(CheckpointError, match="split"):
        bpr(other_split, epochs=2, resume_file=first["model_file"])
    assert {p: digest(p) for p in saved_files(workdir)} == before  # nothing new, nothing touched


def test_identity_mismatch_names_what_differs():
    saved = {"identity": {"model": "BPR", "dataset": "ml-100k", "n_users": 944, "n_items": 1683, "split": "a"}}
    check_identity(saved, dict(saved["identity"]), "x.pth")
    with pytest.raises(CheckpointError, match="dataset 'ml-100k' \\(this run: 'amazon-sample'\\)"):
        check_identity(saved, dict(saved["identity"], dataset="amazon-sample"), "x.pth")
    with pytest.raises(CheckpointError, match="model 'BPR'"):
        check_identity(saved, dict(saved["identity"], model="LightGCN"), "x.pth")


def test_evaluate_refuses_another_runs_checkpoint(workdir):
    from recbole.quick_start import load_data_and_model

    from recbole_cllm4rec.registry import get_trainer

    first = bpr(epochs=1)
    other = bpr(
        {"eval_args": {"split": {"RS": [0.7, 0.2, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}}, epochs=1
    )
    config, model, _, _, _, test = load_data_and_model(first["model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert trainer.evaluate(test, model_file=first["model_file"])
    with pytest.raises(CheckpointError, match="split"):
        trainer.evaluate(test, model_file=other["model_file"])


def test_recbole_documented_evaluation_of_a_saved_cllm4rec_works_in_a_fresh_process(workdir):
    """RecBole's documented client, in a process that never built a Config: load_data_and_model,
    then RecBole's own get_trainer(...).evaluate. Unpickling a Config does not set NumPy's removed
    aliases (np.float, ...) that RecBole's metrics use; importing the package must."""
    trained = recbole_cllm4rec.run(
        "CLLM4Rec", "amazon-sample", config_dict={**faults.TINY_CLLM4REC, "state": "WARNING", "pretrain_epochs": 0}
    )
    code = (
        "import recbole_cllm4rec\n"
        "from recbole.quick_start import load_data_and_model\n"
        "from recbole.utils import get_trainer\n"
        f"config, model, _, _, _, test = load_data_and_model({trained['model_file']!r})\n"
        "result = get_trainer(config['MODEL_TYPE'], config['model'])(config, model).evaluate(test, load_best_model=False)\n"
        "print('NDCG', result['ndcg@10'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ndcg = float(proc.stdout.split("NDCG")[-1])
    assert ndcg == pytest.approx(trained["test_result"]["ndcg@10"], abs=1e-4)


# ---- 4. best checkpoint plus a last-state checkpoint per epoch / stage -------------------------
def test_kill_in_finetuning_resumes_from_the_last_finished_epoch(workdir):
    name, outcome = faults.scenario_kill_during_finetune(str(workdir), kill_epoch=3)
    assert outcome.startswith("ok"), outcome


def test_kill_during_a_resumed_runs_save_keeps_its_source(workdir):
    name, outcome = faults.scenario_kill_during_resumed_save(str(workdir))
    assert outcome.startswith("ok"), outcome


def test_cllm4rec_killed_in_finetuning_goes_on_as_if_never_stopped(workdir):
    """Killed at finetuning epoch 1, resumed from the last-state file: no pretraining again, and
    the remaining epochs' losses are those of the uninterrupted run (tables, optimisers and the
    random stream all came back)."""
    config = dict(faults.TINY_CLLM4REC, epochs=3, content_warmup_epochs=0)
    rc, _, err = faults.run_child(str(workdir), "CLLM4Rec", "amazon-sample", config, hook="epoch", n=1)
    assert rc == -9, err[-2000:]
    last = faults.checkpoints(str(workdir), "*-last.pth")
    assert len(last) == 1 and load_checkpoint(last[0])["epoch"] == 0
    pretrained = faults.checkpoints(str(workdir), "*-pretrained-*.pth")
    assert len(pretrained) == 1 and torch.load(pretrained[0], weights_only=True)["state_dict"]  # no pickle needed
    rc, resumed, err = faults.run_child(str(workdir), "CLLM4Rec", "amazon-sample", dict(config, resume_file=last[0]))
    assert rc == 0, err[-2000:]
    rc, whole, err = faults.run_child(str(workdir), "CLLM4Rec", "amazon-sample", config)
    assert rc == 0, err[-2000:]
    assert "collaborative" not in resumed["stages"] and resumed["stages"]["recommend"]["epochs"] == 2
    flat = lambda losses: [x for pair in losses for x in pair]  # noqa: E731
    assert flat(resumed["stages"]["recommend"]["losses"]) == pytest.approx(
        flat(whole["stages"]["recommend"]["losses"][1:]), rel=1e-4
    )
    assert resumed["test_result"] == pytest.approx(whole["test_result"], abs=1e-4)
    rc, reused, err = faults.run_child(
        str(workdir), "CLLM4Rec", "amazon-sample", dict(config, epochs=1, pretrained_file=pretrained[0])
    )
    assert rc == 0 and "collaborative" not in reused["stages"], err[-2000:]  # pretrained_file loads


def test_last_state_checkpoint_resumes_where_the_run_stopped(workdir):
    first = bpr(epochs=3)
    last = first["model_file"][:-4] + "-last.pth"
    state = load_checkpoint(last)
    assert state["epoch"] == 2 and state["kind"] == "last" and state["best_valid_result"]
    best = load_checkpoint(first["model_file"])
    assert best["kind"] == "best" and best["epoch"] <= 2


def test_kill_in_cllm4rec_pretraining_resumes_from_the_last_stage(workdir):
    name, outcome = faults.scenario_kill_during_pretrain(str(workdir), dataset="amazon-sample")
    assert outcome.startswith("ok"), outcome


# ---- 5. a comparison keeps every finished row ---------------------------------------------------
def test_compare_writes_each_row_and_a_failed_models_reason(workdir):
    from recbole_cllm4rec.quick_start import _run_isolated, _writer

    results_file = workdir / "results" / "cmp.md"
    write = _writer(str(results_file), "amazon-sample: Pop, Broken", ["(test)"])
    jobs = [
        ("Pop", ("Pop", "amazon-sample", None, dict(BPR), True)),
        ("Broken", ("NoSuchModel", "amazon-sample", None, dict(BPR), True)),
    ]
    results = _run_isolated(jobs, on_result=write)
    text = results_file.read_text()
    assert "| Pop | 0." in text and "Protocol: dataset amazon-sample" in text
    assert "| Broken | failed: ModelNotFoundError: unknown model 'NoSuchModel'" in text
    assert results[1]["failed"].startswith("ModelNotFoundError")


def test_compare_refuses_an_unwritable_results_file_before_training(workdir):
    (workdir / "a_file").write_text("x")
    with pytest.raises(recbole_cllm4rec.ConfigFileError, match="cannot be written"):
        recbole_cllm4rec.compare(
            ["Pop"], "amazon-sample", config_dict=dict(BPR), results_file=str(workdir / "a_file" / "x.md")
        )
    assert not os.path.exists(workdir / "saved")


# ---- 6. an unguarded script stops at once ---------------------------------------------------------
def test_unguarded_compare_script_stops_with_a_message(workdir):
    script = workdir / "cmp.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {ROOT!r})\nimport recbole_cllm4rec\n"
        f"recbole_cllm4rec.compare(['Pop'], 'amazon-sample', config_dict={dict(BPR)!r}, results_file='x.md')\n"
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "without a main guard" in proc.stderr and 'if __name__ == "__main__"' in proc.stderr
    assert not os.path.exists(workdir / "saved")  # stopped before any training


def test_readme_compare_example_is_guarded():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    example = readme[readme.index("From Python:") :]
    example = example[: example.index("```\n", example.index("```python") + 10)]
    assert 'if __name__ == "__main__":' in example
    assert example.index('if __name__ == "__main__":') < example.index("compare(")


# ---- 7. loading never runs code and never trains on NaN -------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_on_every_load_path(workdir):
    from recbole.quick_start import load_data_and_model

    from recbole_cllm4rec.registry import get_trainer

    marker = workdir / "pwned"
    crafted = workdir / "crafted.pth"
    torch.save({"state_dict": {}, "epoch": 0, "config": _Payload(marker)}, crafted)
    good = bpr(epochs=1)
    with pytest.raises(CheckpointError, match="not plain checkpoint data"):
        bpr(epochs=2, resume_file=str(crafted))
    with pytest.raises(CheckpointError, match="not plain checkpoint data"):
        load_data_and_model(str(crafted))
    config, model, _, _, _, test = load_data_and_model(good["model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    with pytest.raises(CheckpointError, match="not plain checkpoint data"):
        trainer.evaluate(test, model_file=str(crafted))
    from recbole.trainer import Trainer

    with pytest.raises(CheckpointError):  # RecBole's own Trainer, through compat's torch.load
        Trainer.resume_checkpoint(trainer, str(crafted))
    assert not marker.exists()


def test_stock_recbole_checkpoints_still_load(workdir):
    """A checkpoint written by RecBole's own Trainer._save_checkpoint (a pickled Config,
    protocol 4) loads through load_data_and_model."""
    from recbole.quick_start import load_data_and_model
    from recbole.trainer import Trainer

    from recbole_cllm4rec.registry import get_trainer

    good = bpr(epochs=1)
    config, model, _, _, _, test = load_data_and_model(good["model_file"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    stock = str(workdir / "stock.pth")
    Trainer._save_checkpoint(trainer, 0, verbose=False, saved_model_file=stock)
    config2, model2, *_ = load_data_and_model(stock)
    assert config2["model"] == "BPR" and config2.model_class is type(model2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_a_checkpoint_with_nan_weights_is_refused(workdir):
    good = bpr(epochs=1)
    state = torch.load(good["model_file"], weights_only=False)
    key = next(iter(state["state_dict"]))
    state["state_dict"][key].view(-1)[0] = float("nan")
    bad = str(workdir / "nan.pth")
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        bpr(epochs=2, resume_file=bad)
    open(bad, "wb").close()
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(bad)


def test_pretrained_file_needs_no_pickle(workdir):
    from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer

    marker = workdir / "pwned"
    crafted = workdir / "pretrained.pth"
    torch.save({"state_dict": {}, "other_parameter": _Payload(marker)}, crafted)
    with pytest.raises(CheckpointError, match="not a plain tables file"):
        CLLM4RecTrainer._load_pretrained(types.SimpleNamespace(device="cpu"), str(crafted))
    torch.save({"state_dict": {"x": torch.tensor([float("inf")])}}, crafted)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        CLLM4RecTrainer._load_pretrained(types.SimpleNamespace(device="cpu"), str(crafted))
    assert not marker.exists()


def test_cli_refuses_a_crafted_resume_file_in_one_line(workdir):
    marker = workdir / "pwned"
    crafted = workdir / "crafted.pth"
    torch.save({"state_dict": {}, "epoch": 0, "config": _Payload(marker)}, crafted)
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "run_recbole.py"),
            "--model=BPR",
            "--dataset=amazon-sample",
            f"--data_path={faults.DATA}",
            "--epochs=1",
            "--state=WARNING",
            f"--resume_file={crafted}",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: refusing to load") and "Traceback" not in proc.stderr
    assert not marker.exists() and not saved_files(workdir)


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    from recbole_cllm4rec.checkpoint import remove_stale_temporaries

    dead = tmp_path / ".BPR-x.pth.999999999-abcdef.tmp"  # no such pid
    alive = tmp_path / f".BPR-y.pth.{os.getpid()}-abcdef.tmp"
    for path in (dead, alive):
        path.write_bytes(b"half a checkpoint")
        os.utime(path, (0, 0))
    remove_stale_temporaries(str(tmp_path))
    assert not dead.exists() and alive.exists()


def test_the_copied_fit_still_matches_recboles_trainer_fit():
    import ast

    import recbole.trainer.trainer as recbole_trainer

    from recbole_cllm4rec.checkpoint import RECBOLE_FIT_SHA256

    source = open(recbole_trainer.__file__, encoding="utf-8").read()
    trainer = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    fit = next(f for f in trainer.body if isinstance(f, ast.FunctionDef) and f.name == "fit")
    digest = hashlib.sha256(ast.get_source_segment(source, fit).encode()).hexdigest()
    assert digest == RECBOLE_FIT_SHA256, (
        "RecBole's Trainer.fit is not the one CheckpointMixin.fit was copied from: carry its changes "
        "into the copy, then update RECBOLE_FIT_SHA256"
    )
