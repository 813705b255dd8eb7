"""Kills and concurrency against checkpoints (issue 11, items 1-7), each scenario in child processes.

Every ``scenario_*`` function runs in a scratch folder and returns a ``(name, outcome)`` row,
``outcome`` starting with ``ok:`` when the behaviour is the wanted one (``benchmarks/
reliability.py`` imports them for ``results/reliability.md``). Run alone:

    python benchmarks/reliability_faults.py            # every scenario (BPR / tiny CLLM4Rec, amazon-sample)
    python benchmarks/reliability_faults.py --only kill_during_save

Each child is a ``python -c`` program that imports this package, optionally installs a kill
hook (SIGKILL at a chosen point: inside a checkpoint write, at the start of an epoch, at the start
of a CLLM4Rec pretraining stage), runs ``recbole_cllm4rec.run`` and prints its result as JSON.
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from recbole_cllm4rec.llm import backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "dataset")
BPR = {"epochs": 4, "stopping_step": 100, "show_progress": False, "state": "INFO", "data_path": DATA}
TINY_CLLM4REC = {**backbone.TINY_CLLM4REC, "state": "INFO", "data_path": DATA}
ALPHAREC = {
    "epochs": 4,
    "eval_step": 1,
    "stopping_step": 100,
    "mlp_hidden_size": 64,
    "show_progress": False,
    "state": "INFO",
    "data_path": DATA,
}
RESULT = "RESULT-JSON:"

_HOOKS = {
    # SIGKILL halfway through the Nth torch.save (half the bytes written, the rest never)
    "save": """
import io, torch
_save, _calls = torch.save, [0]
def _killing_save(obj, f, *a, **k):
    _calls[0] += 1
    if _calls[0] < {n}:
        return _save(obj, f, *a, **k)
    buf = io.BytesIO(); _save(obj, buf, *a, **k); data = buf.getvalue()
    out = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
    out.write(data[: len(data) // 2]); out.flush(); os.fsync(out.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = _killing_save
""",
    # SIGKILL at the start of finetuning epoch N (epochs 0..N-1 finished)
    "epoch": """
from recbole.trainer import Trainer
def _hook(cls):
    train = cls._train_epoch
    def _train_epoch(self, train_data, epoch_idx, *a, **k):
        if epoch_idx >= {n}:
            os.kill(os.getpid(), signal.SIGKILL)
        return train(self, train_data, epoch_idx, *a, **k)
    cls._train_epoch = _train_epoch
_hook(Trainer)
from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer
_hook(CLLM4RecTrainer)
""",
    # SIGKILL at the start of CLLM4Rec's collaborative pretraining epoch (after the content warm-up)
    "stage": """
from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer
def _collaborative_epoch(self, *a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
CLLM4RecTrainer.collaborative_epoch = _collaborative_epoch
""",
}


def child_code(workdir, model, dataset, config_dict, hook=None, n=1, frozen_time=None):
    """The ``python -c`` program of one run; ``frozen_time`` pins RecBole's clock (every run
    then starts 'in the same second')."""
    lines = [
        "import os, sys, json, signal",
        f"os.chdir({workdir!r})",
        f"sys.path.insert(0, {ROOT!r})",
        "import recbole_cllm4rec",
    ]
    if frozen_time:
        lines += [
            "import recbole.utils.utils as _u, recbole.utils.logger as _l, recbole.trainer.trainer as _t",
            f"_u.get_local_time = _l.get_local_time = _t.get_local_time = lambda: {frozen_time!r}",
        ]
    if hook:
        lines.append(_HOOKS[hook].replace("{n}", str(n)))
    lines += [
        f"r = recbole_cllm4rec.run({model!r}, {dataset!r}, config_dict={config_dict!r})",
        "r = {k: v for k, v in r.items() if k in ('model_file', 'test_result', 'best_valid_result', 'stages', 'best_valid_score')}",
        f"print({RESULT!r} + json.dumps(r, default=float), flush=True)",
    ]
    return "\n".join(lines)


def start(workdir, model, dataset, config_dict, hook=None, n=1, frozen_time=None):
    code = child_code(workdir, model, dataset, config_dict, hook, n, frozen_time)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    result = None
    for line in out.splitlines():
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT) :])
    return proc.returncode, result, err


def run_child(workdir, model, dataset, config_dict, hook=None, n=1, frozen_time=None, timeout=600):
    return finish(start(workdir, model, dataset, config_dict, hook, n, frozen_time), timeout)


def checkpoints(workdir, pattern="*.pth"):
    return sorted(glob.glob(os.path.join(workdir, "saved", pattern)))


def _load(path):
    from recbole_cllm4rec.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---- scenarios --------------------------------------------------------------------------------
def scenario_concurrent_same_second(workdir, model="BPR", dataset="amazon-sample"):
    """Two runs in one folder, started together with RecBole's clock frozen, different learning
    rates: each keeps its own checkpoint, log and test result."""
    frozen = "Jan-01-2030_00-00-00"
    rates = [0.001, 0.05]
    procs = [start(workdir, model, dataset, dict(BPR, learning_rate=lr), frozen_time=frozen) for lr in rates]
    outs = [finish(p) for p in procs]
    name = "two runs started in the same second, one folder"
    if any(rc != 0 for rc, _, _ in outs):
        return name, f"failed: a run exited {[rc for rc, _, _ in outs]}: {_last_line(outs[0][2] or outs[1][2])}"
    files = [r["model_file"] for _, r, _ in outs]
    logs = glob.glob(os.path.join(workdir, "log", model, "*.log"))
    if len(set(files)) != 2:
        return name, f"failed: both runs wrote {files[0]}"
    saved_rates = [_load(f)["config"]["learning_rate"] for f in files]
    if saved_rates != rates:
        return name, f"failed: checkpoints hold learning rates {saved_rates}, runs used {rates}"
    if len(logs) < 2:
        return name, f"failed: {len(logs)} log file(s) for 2 runs"
    return name, f"ok: 2 checkpoints ({', '.join(os.path.basename(f) for f in files)}), {len(logs)} logs"


def scenario_kill_during_save(workdir, model="BPR", dataset="amazon-sample", n=3, config=None):
    """SIGKILL halfway through the Nth checkpoint write: every checkpoint left loads."""
    rc, _, err = run_child(workdir, model, dataset, config or BPR, hook="save", n=n)
    name = f"SIGKILL during {model} checkpoint write #{n}"
    if rc != -signal.SIGKILL:
        return name, f"failed: the run was not killed (exit {rc}): {_last_line(err)}"
    left = checkpoints(workdir)
    if not left:
        return name, "failed: no checkpoint left"
    broken = []
    for path in left:
        try:
            _load(path)
        except Exception as e:  # noqa: BLE001
            broken.append(f"{os.path.basename(path)} ({_last_line(str(e))[:80]})")
    if broken:
        return name, f"failed: checkpoint lost: {'; '.join(broken)}"
    return name, f"ok: {len(left)} checkpoint(s) left, all loadable"


def scenario_kill_during_finetune(workdir, model="BPR", dataset="amazon-sample", kill_epoch=3, config=None):
    """SIGKILL at the start of epoch ``kill_epoch``; the last-state checkpoint resumes from there
    and the source files stay as they were."""
    config = dict(config or BPR)
    rc, _, err = run_child(workdir, model, dataset, config, hook="epoch", n=kill_epoch)
    name = f"SIGKILL in {model} finetuning epoch {kill_epoch}, then --resume_file"
    if rc != -signal.SIGKILL:
        return name, f"failed: the run was not killed (exit {rc}): {_last_line(err)}"
    last = checkpoints(workdir, "*-last.pth")
    if not last:
        return name, "failed: no last-state checkpoint to resume from"
    state = _load(last[0])
    before = {p: os.path.getmtime(p) for p in checkpoints(workdir)}
    rc, result, err = run_child(workdir, model, dataset, dict(config, resume_file=last[0]))
    if rc != 0:
        return name, f"failed: the resumed run exited {rc}: {_last_line(err)}"
    touched = [p for p, t in before.items() if os.path.getmtime(p) != t]
    if touched:
        return name, f"failed: resuming rewrote {', '.join(map(os.path.basename, touched))}"
    if state["epoch"] != kill_epoch - 1 or not result["best_valid_result"]:
        return name, f"failed: resumed from epoch {state['epoch'] + 1}, best valid {result['best_valid_result']}"
    return name, f"ok: resumed from epoch {state['epoch'] + 1} into {os.path.basename(result['model_file'])}"


def scenario_kill_during_alpharec_finetune(workdir, dataset="amazon-sample"):
    """AlphaRec (a small projector) killed at its third epoch resumes from the second."""
    return scenario_kill_during_finetune(workdir, "AlphaRec", dataset, kill_epoch=2, config=ALPHAREC)


def scenario_kill_during_cllm4rec_save(workdir, dataset="amazon-sample"):
    """CLLM4Rec killed halfway through its second checkpoint write (a pretraining stage's)."""
    return scenario_kill_during_save(workdir, "CLLM4Rec", dataset, n=2, config=TINY_CLLM4REC)


def _killed_then_resumed(workdir, name, model, dataset, config, **kill):
    """Run until ``kill``'s hook SIGKILLs it, then resume from its last-state checkpoint:
    ``(resumed result, None)``, or ``(None, (name, failure))``."""
    rc, _, err = run_child(workdir, model, dataset, config, **kill)
    if rc != -signal.SIGKILL:
        return None, (name, f"failed: the run was not killed (exit {rc}): {_last_line(err)}")
    last = checkpoints(workdir, "*-last.pth")
    if not last:
        return None, (name, "failed: no last-state checkpoint to resume from")
    rc, result, err = run_child(workdir, model, dataset, dict(config, resume_file=last[0]))
    if rc != 0:
        return None, (name, f"failed: the resumed run exited {rc}: {_last_line(err)}")
    return result, None


def scenario_kill_during_pretrain(workdir, dataset="amazon-sample"):
    """SIGKILL at CLLM4Rec's collaborative pretraining epoch; resuming skips the finished
    content warm-up and goes on with the collaborative epoch."""
    name = "SIGKILL in CLLM4Rec pretraining, then --resume_file"
    result, failure = _killed_then_resumed(workdir, name, "CLLM4Rec", dataset, TINY_CLLM4REC, hook="stage")
    if failure:
        return failure
    stages = result["stages"]
    if "content(no MR)" in stages or "collaborative" not in stages:
        return name, f"failed: the resumed run ran stages {sorted(stages)}"
    return name, f"ok: resumed after the content warm-up; ran {', '.join(sorted(stages))}"


def scenario_crafted_pickle(workdir):
    """A .pth whose unpickling would run a command, given as resume_file: refused, nothing run."""
    import torch

    marker = os.path.join(workdir, "pwned")

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = os.path.join(workdir, "crafted.pth")
    torch.save({"state_dict": {}, "config": Payload()}, path)
    rc, _, err = run_child(workdir, "BPR", "amazon-sample", dict(BPR, resume_file=path))
    name = "crafted pickle as --resume_file"
    if os.path.exists(marker):
        return name, "failed: the pickle ran its command"
    if rc == 0:
        return name, "failed: accepted"
    return name, f"ok: refused: {_last_line(err)[:160]}"


def scenario_nan_checkpoint(workdir):
    """A checkpoint whose weights hold NaN (a flipped exponent byte) is refused at load."""
    rc, result, err = run_child(workdir, "BPR", "amazon-sample", dict(BPR, epochs=1))
    name = "checkpoint with NaN weights as --resume_file"
    if rc != 0:
        return name, f"failed: the first run exited {rc}: {_last_line(err)}"
    import torch

    state = torch.load(result["model_file"], weights_only=False)
    key = next(iter(state["state_dict"]))
    state["state_dict"][key].view(-1)[0] = float("nan")
    bad = os.path.join(workdir, "nan.pth")
    torch.save(state, bad)
    rc, _, err = run_child(workdir, "BPR", "amazon-sample", dict(BPR, resume_file=bad))
    if rc == 0:
        return name, "failed: trained on it"
    return name, f"ok: refused: {_last_line(err)[:160]}"


def scenario_kill_during_resumed_save(workdir, model="BPR", dataset="amazon-sample"):
    """A resumed run killed inside its first checkpoint write: the file it resumed from is intact."""
    rc, first, err = run_child(workdir, model, dataset, dict(BPR, epochs=1))
    name = "SIGKILL during a resumed run's checkpoint write"
    if rc != 0:
        return name, f"failed: the first run exited {rc}: {_last_line(err)}"
    source = first["model_file"]
    rc, _, err = run_child(workdir, model, dataset, dict(BPR, resume_file=source), hook="save", n=1)
    if rc != -signal.SIGKILL:
        return name, f"failed: the resumed run was not killed (exit {rc}): {_last_line(err)}"
    try:
        _load(source)
    except Exception as e:  # noqa: BLE001
        return name, f"failed: the source checkpoint is lost: {_last_line(str(e))[:120]}"
    return name, "ok: the source checkpoint is untouched and loads"


def scenario_kill_during_cllm4rec_finetune(workdir, dataset="amazon-sample"):
    """CLLM4Rec killed at its second finetuning epoch resumes from the first, without pretraining."""
    config = dict(TINY_CLLM4REC, epochs=3, content_warmup_epochs=0)
    name = "SIGKILL in CLLM4Rec finetuning, then --resume_file"
    result, failure = _killed_then_resumed(workdir, name, "CLLM4Rec", dataset, config, hook="epoch", n=1)
    if failure:
        return failure
    stages = result["stages"]
    if "collaborative" in stages or stages.get("recommend", {}).get("epochs") != 2:
        return name, f"failed: the resumed run ran {stages}"
    return name, "ok: resumed at epoch 1 with no pretraining; 2 epochs left ran"


def scenario_resume_other_split(workdir, model="BPR", dataset="amazon-sample"):
    """Resuming from a checkpoint of another split (same shapes) is refused, nothing written."""
    rc, first, err = run_child(workdir, model, dataset, dict(BPR, epochs=1))
    name = "--resume_file from another split (same shapes)"
    if rc != 0:
        return name, f"failed: the first run exited {rc}: {_last_line(err)}"
    before = {p: os.path.getmtime(p) for p in checkpoints(workdir)}
    split = {"split": {"RS": [0.7, 0.2, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}
    rc, _, err = run_child(workdir, model, dataset, dict(BPR, eval_args=split, resume_file=first["model_file"]))
    after = {p: os.path.getmtime(p) for p in checkpoints(workdir)}
    if rc == 0:
        return name, "failed: accepted"
    if after != before:
        return name, "failed: refused, but files were written"
    return name, f"ok: refused before writing: {_last_line(err)[:160]}"


SCENARIOS = [
    scenario_concurrent_same_second,
    scenario_kill_during_save,
    scenario_kill_during_resumed_save,
    scenario_kill_during_finetune,
    scenario_kill_during_pretrain,
    scenario_kill_during_cllm4rec_finetune,
    scenario_kill_during_cllm4rec_save,
    scenario_kill_during_alpharec_finetune,
    scenario_resume_other_split,
    scenario_crafted_pickle,
    scenario_nan_checkpoint,
]
BY_NAME = {f.__name__[len("scenario_") :]: f for f in SCENARIOS}


def run_scenarios(names=None):
    rows = []
    for key in names or BY_NAME:
        with tempfile.TemporaryDirectory(prefix=f"fault-{key}-") as workdir:
            start_time = time.time()
            try:
                name, outcome = BY_NAME[key](workdir)
            except Exception as err:  # noqa: BLE001
                name, outcome = key, f"failed: {type(err).__name__}: {err}"
            rows.append((name, f"{outcome} ({time.time() - start_time:.0f} s)"))
    return rows


def markdown(rows):
    return "\n".join(["| fault | outcome |", "|---|---|"] + [f"| {n} | {o.replace('|', '/')} |" for n, o in rows])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BY_NAME))
    print(markdown(run_scenarios(parser.parse_args().only)))
