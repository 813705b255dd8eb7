"""``run`` trains and tests one model the way RecBole's ``run_recbole`` does; ``compare`` runs
several on the same dataset and split and writes one side-by-side table."""

import datetime
import glob
import json
import logging
import multiprocessing
import os
import platform
import resource
import signal
import sys
import threading
import time
from contextlib import contextmanager
from logging import getLogger

import yaml

from recbole_cllm4rec import coldstart, validation
from recbole_cllm4rec.registry import check_dataset, get_model, get_trainer, properties_dir, property_file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so one comparison per results file there
    fcntl = None


class ConfigFileError(ValueError):
    def __init__(self, message):  # one line (a yaml error spans several), as the CLI prints it
        super().__init__(" ".join(str(message).split()))


def parse_overrides(args):
    """``--key=value`` pairs, values read as yaml (``0.01``, ``[10,20]``, ``true``, ``{RS: [...]}``)."""
    overrides, given = {}, {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            print(f"error: unrecognised argument '{arg}'; overrides take the form --key=value", file=sys.stderr)
            raise SystemExit(2)
        key, value = arg[2:].split("=", 1)
        if key in given:  # a dict would keep the last one silently
            print(f"error: --{key} is given twice ({given[key]!r} and {value!r}): keep one of them", file=sys.stderr)
            raise SystemExit(2)
        given[key] = value
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key] = value
    return overrides


@contextmanager
def _no_command_line():
    """RecBole's Config parses every ``--k=v`` of ``sys.argv`` (pytest's flags included);
    ``run`` takes its overrides through ``config_dict`` only."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def config_files_for(model, dataset, extra_files=()):
    """Project defaults, then the model's and the dataset's property files, then the user's."""
    files = [os.path.join(properties_dir(), "overall.yaml")]
    files += [f for f in (property_file("model", model), property_file("dataset", dataset)) if f]
    for path in extra_files or ():
        if not os.path.isfile(path):
            raise ConfigFileError(f"config file '{path}' does not exist")
        try:
            content = validation.load_yaml_file(path)  # a key given twice is an error, not the last one kept
        except yaml.YAMLError as err:
            raise ConfigFileError(f"config file '{path}' is not valid yaml: {err}") from err
        if content is not None and not isinstance(content, dict):
            raise ConfigFileError(f"config file '{path}' must hold 'key: value' lines, not {type(content).__name__}")
        if content is not None:  # an empty file (or comments only) sets nothing; RecBole's loader fails on it
            files.append(path)
    return files


def build_config(model, dataset="ml-100k", config_file_list=None, config_dict=None):
    from recbole.config import Config

    model_class = get_model(model)
    files = config_files_for(model, dataset, config_file_list)
    # Every user-given value is checked here, once, before RecBole sees it (validation.py).
    validation.check_user_settings(model, dataset, config_file_list, config_dict)
    try:
        with _no_command_line():
            config = Config(
                model=model_class, dataset=dataset, config_file_list=files, config_dict=dict(config_dict or {})
            )
    except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError, AssertionError) as err:
        if isinstance(err, validation.InputError):
            raise
        raise validation.ConfigValueError(f"RecBole rejected the configuration of {model}: {err}") from err
    validation.check_config(config)
    coldstart.protocol_of(config)  # the cold-start keys agree with each other and with the split
    return config


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def run(
    model,
    dataset="ml-100k",
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
):
    """Train ``model`` on ``dataset``, select on validation, test; returns RecBole's result dict
    plus ``train_time_s``, ``total_time_s``, ``peak_rss_mb`` and ``model_file``.

    ``nproc`` > 1 (or a ``world_size`` over several machines) trains with torch DDP the way
    RecBole's ``run`` does: ``nproc`` local ranks, ranks ``group_offset`` and up, rendezvous at
    ``ip:port``; gloo on CPU, NCCL on GPU. Rank 0's result is returned."""
    _refuse_unguarded_main("run", spawns=is_multi_process(nproc, world_size))
    if is_multi_process(nproc, world_size):
        return _run_distributed(
            model,
            dataset,
            config_file_list,
            config_dict,
            saved,
            nproc,
            world_size if world_size > 0 else nproc,
            ip,
            port,
            group_offset,
        )
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_cllm4rec.checkpoint import init_run_logger

    start = time.time()
    config = build_config(model, dataset, config_file_list, config_dict)
    check_outputs(config)
    init_seed(config["seed"], config["reproducibility"])
    log_file = init_run_logger(config)  # log/<Model>/...-<run stamp>-<md5>.log: one file per run
    logger = getLogger()
    if config["local_rank"] != 0:  # one log file per run, written by rank 0
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)
            handler.close()
            os.remove(handler.baseFilename)
    logger.info(config)
    check_dataset(config)

    data = create_dataset(config)
    logger.info(data)
    validation.check_samplable(config, data)
    train_data, valid_data, test_data = data_preparation(config, data)
    validation.check_data(config, data, train_data, valid_data, test_data)  # before any model is built

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    recommender = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(recommender)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
    if config["resume_file"]:  # its existence: validation.check_config
        trainer.resume_checkpoint(config["resume_file"])

    fit_start = time.time()
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
        train_time = time.time() - fit_start
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
        extra = coldstart.extra_results(config, trainer, train_data, test_data, config["show_progress"])
    except KeyboardInterrupt as err:
        raise _stopped_run(err, model, dataset, config_file_list, config_dict, trainer) from None
    logger.info(f"best valid : {best_valid_result}")
    logger.info(f"test result: {test_result}")
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": dict(best_valid_result or {}),
        "test_result": dict(test_result),
        "train_time_s": train_time,
        "total_time_s": time.time() - start,
        "peak_rss_mb": peak_rss_mb(),
        "model_file": os.path.abspath(trainer.saved_model_file) if saved else None,
        "log_file": log_file,
        "protocol": protocol(config),
        "stages": getattr(trainer, "stage_stats", {}),  # per-stage tokens and seconds (LLM models)
        "extra_results": extra,  # further test tables of a cold-start protocol
    }


def is_multi_process(nproc=1, world_size=-1, **_rendezvous):
    """Whether ``run``'s launch arguments ask for torch DDP ranks rather than one process; every
    launch passes here first, so bad counts stop here (``validation.check_launch``)."""
    validation.check_launch(nproc, world_size)
    return nproc > 1 or world_size > 0


def _run_rank(local_rank, args, queue):
    _die_with_parent(os.getppid())
    model, dataset, config_file_list, config_dict, saved = args
    result = run(model, dataset, config_file_list, {**config_dict, "local_rank": local_rank}, saved)
    if local_rank == 0:
        queue.put(result)
    import torch.distributed as dist

    dist.barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()
    # Interpreter teardown with gloo's and the tokenizers' threads alive sometimes aborted a
    # rank (SIGABRT, "terminate called without an active exception") after all its work was
    # done, failing the whole run; the result is already sent and the logs flushed here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_distributed(model, dataset, config_file_list, config_dict, saved, nproc, world_size, ip, port, group_offset):
    import torch.multiprocessing as mp

    # Fail on a bad model name or config here, not in every rank, and make the folders the
    # ranks would otherwise race to create.
    config = build_config(model, dataset, config_file_list, config_dict)
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)
    check_outputs(config)
    queue = mp.get_context("spawn").SimpleQueue()
    ranks = {"world_size": world_size, "ip": ip, "port": str(port), "nproc": nproc, "offset": group_offset}
    args = (model, dataset, config_file_list, {**(config_dict or {}), **ranks}, saved)
    start = time.time()
    context = mp.spawn(_run_rank, args=(args, queue), nprocs=nproc, join=False)
    try:
        while not context.join():
            pass
    except KeyboardInterrupt as err:  # stop the ranks here: exiting would wait for them to finish
        for process in context.processes:
            _stop_process(process, 0)
        # rank 0 wrote this run's files; the ranks are gone, so the newest last-state file is its
        pattern = os.path.join(config["checkpoint_dir"], f"{config['model']}-*-last.pth")
        written = sorted((f for f in glob.glob(pattern) if os.path.getmtime(f) >= start), key=os.path.getmtime)
        if written:
            last = written[-1]
            ranks = {"nproc": nproc} if nproc > 1 else {}
            resume = _resume_command(model, dataset, config_file_list, {**(config_dict or {}), **ranks}, last)
            message = f"{model}'s {nproc} ranks stopped; saved {last} (last finished epoch); go on with: {resume}"
        else:
            message = (
                f"{model}'s {nproc} ranks stopped before a last-state checkpoint was saved; nothing to resume from"
            )
        raise Interrupted(message, getattr(err, "signum", signal.SIGINT)) from None
    if queue.empty():
        return None  # this machine holds no rank 0
    result = queue.get()
    result["total_time_s"] = time.time() - start
    result["nproc"], result["world_size"] = nproc, world_size
    return result


def protocol(config):
    """One line saying how the numbers were produced."""
    args = config["eval_args"]
    return (
        f"dataset {config['dataset']}, split {args['split']}, order {args['order']}, "
        f"group_by {args['group_by']}, mode {args['mode']}, seed {config['seed']}, "
        f"valid metric {config['valid_metric']}, "
        f"RecBole full ranking (train+valid items excluded at test){coldstart.describe(config)}"
    )


# ---- interruption: one line, and no worker left training ----------------------------------------
class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM. ``str()`` is one line saying what was saved
    where and how to go on; ``signum`` is the signal (the CLI exits with 128 + signum)."""

    def __init__(self, message="", signum=signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


def stop_on_signals():
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread, once: later ones do nothing,
    so the clean-up the first one starts (stopping a worker, reporting) is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        return
    raised = []

    def handler(signum, frame):
        # a no-op later, not SIG_IGN: a signal already pending would print "ignored due to race condition"
        if not raised:
            raised.append(signum)
            raise Interrupted(signum=signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _die_with_parent(parent_pid):
    """SIGTERM to this worker when its parent dies, even by SIGKILL, so it never trains on for
    nobody: Linux's PR_SET_PDEATHSIG, elsewhere a thread watching the parent's pid."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) == 0:  # 1: PR_SET_PDEATHSIG
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _resume_command(model, dataset, config_file_list, config_dict, last):
    """The command line that goes on from the last-state file ``last``."""
    settings = {k: v for k, v in (config_dict or {}).items() if k != "resume_file"}
    return command_line([model], dataset, config_file_list, {**settings, "resume_file": last})


def _stopped_run(err, model, dataset, config_file_list, config_dict, trainer):
    """``Interrupted`` for a run stopped in training or testing, naming its saved files and the
    command that goes on from the last one."""
    best = trainer.saved_model_file if os.path.isfile(getattr(trainer, "saved_model_file", "") or "") else None
    last = getattr(trainer, "last_model_file", None)
    if last and os.path.isfile(last):
        resume = _resume_command(model, dataset, config_file_list, config_dict, last)
        saved = f"{best} (best on validation) and {last}" if best else last
        message = f"{model} stopped; saved {saved} (last finished epoch); go on with: {resume}"
    else:
        message = f"{model} stopped before a last-state checkpoint was saved; nothing to resume from"
    return Interrupted(message, getattr(err, "signum", signal.SIGINT))


def _failure(err):
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _worker_main(conn, args, parent_pid):
    """A comparison's worker process: ``run(*args)``, the outcome sent back as ``("result", dict)``,
    ``("failed", reason)`` or ``("interrupted", one line)``; never a traceback for a signal."""
    stop_on_signals()
    _die_with_parent(parent_pid)
    try:
        try:
            outcome = ("result", run(*args))
        except KeyboardInterrupt as err:
            outcome = ("interrupted", str(err) or f"{args[0]} stopped before training started; nothing saved")
        except BaseException as err:  # noqa: BLE001  one model's failure becomes its row
            outcome = ("failed", _failure(err))
        try:
            conn.send(outcome)
        except (OSError, EOFError):
            pass  # the parent is gone: nobody to report to
        except Exception as err:  # noqa: BLE001  a result that does not pickle
            conn.send(("failed", f"its result could not be sent back: {_failure(err)}"))
    except KeyboardInterrupt:
        pass  # a signal after the run ended; the parent has what it needs or is stopping
    finally:
        conn.close()


def _stop_process(process, grace_s):
    """Wait ``grace_s`` for ``process`` to end, then SIGTERM, then SIGKILL: it ends either way."""
    process.join(grace_s)
    if process.is_alive():
        process.terminate()
        process.join(30)
    if process.is_alive():
        process.kill()
        process.join()


def _run_in_worker(args):
    """``run(*args)`` in a fresh spawned process (its peak memory is its own); a failure or a
    death is a ``{"failed": reason}`` row. SIGINT/SIGTERM here stop the worker (SIGTERM, then
    SIGKILL) before ``Interrupted`` goes up carrying the worker's own line on what it saved."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_worker_main, args=(send, args, os.getpid()), name=f"recbole-{args[0]}")
    try:
        worker.start()
        send.close()  # the worker holds the only write end: its death reads as EOF here
        try:
            kind, payload = receive.recv()
        except (EOFError, OSError):
            kind, payload = "failed", "its process died (killed, or out of memory?) before returning a result"
        _stop_process(worker, 60)
    except KeyboardInterrupt as err:
        if worker.pid is not None:  # started (else there is nothing to stop)
            _stop_process(worker, 0)
        message = f"{args[0]} stopped"
        try:
            if receive.poll():
                kind, payload = receive.recv()
                message = payload if kind == "interrupted" else message
        except Exception:  # noqa: BLE001  a message cut off by the interrupt
            pass
        raise Interrupted(message, getattr(err, "signum", signal.SIGINT)) from None
    finally:
        send.close()
        receive.close()
    if kind == "interrupted":  # the worker alone was signalled: a failed row, as a killed one gets
        return {"failed": f"interrupted: {payload}"}
    return payload if kind == "result" else {"failed": payload}


def _run_in_child(args):  # the worker entry of parents started before _worker_main existed
    return run(*args)


def _run_isolated(jobs, launch=None, on_result=None):
    """Run each ``(label, run arguments)`` job in fresh processes, so peak memory is its own;
    ``launch`` holds ``run``'s multi-process arguments (its ranks are fresh processes already).
    A job that fails (an error, or its process killed) gives a row ``{"model", "failed"}`` and the
    next job runs; ``on_result(results so far)`` is called after every job. An interrupt stops
    the job's processes and raises ``Interrupted``."""
    results = []
    for label, args in jobs:
        if is_multi_process(**(launch or {})):
            try:
                result = run(*args, **launch)
            except Exception as err:  # noqa: BLE001  one model's failure must not lose the others' rows
                result = {"failed": _failure(err)}
        else:
            result = _run_in_worker(args)
        if result is None:
            continue  # a multi-machine run whose rank 0 is elsewhere
        result["model"] = label
        results.append(result)
        if on_result:
            on_result(results)
    return results


class UnguardedMainError(RuntimeError):
    pass


def _guarded_lines(path):
    """Line ranges of the top-level ``if __name__ == "__main__":`` blocks of a script."""
    import ast

    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    ranges = []
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.comparators) == 1:
            sides = [node.test.left, node.test.comparators[0]]
            names = [n.id for n in sides if isinstance(n, ast.Name)]
            consts = [n.value for n in sides if isinstance(n, ast.Constant)]
            if names == ["__name__"] and consts == ["__main__"] and isinstance(node.test.ops[0], ast.Eq):
                ranges.append((node.body[0].lineno, node.end_lineno))
    return ranges


def _refuse_unguarded_main(what, spawns=True):
    """Spawned workers re-import the main script; top-level calls outside an ``if __name__ ==
    "__main__":`` block then run again in every worker (which spawns again: training without
    end). Stop at once, in the script itself (``spawns``) and in any worker re-running it."""
    hint = (
        f'put the {what}(...) call of your script under `if __name__ == "__main__":` '
        f"(worker processes start with the spawn method and re-run the script's top level)"
    )
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            if name == "__mp_main__":
                raise UnguardedMainError(f"{what}() called while a worker process re-imported the main script: {hint}")
            if name == "__main__" and spawns:
                path = frame.f_globals.get("__file__")
                ranges = _guarded_lines(path) if path and os.path.isfile(path) else None
                if ranges is not None and not any(a <= frame.f_lineno <= b for a, b in ranges):
                    raise UnguardedMainError(
                        f"{what}() called at the top level of {path} (line {frame.f_lineno}) "
                        f"without a main guard: {hint}"
                    )
                return
        frame = frame.f_back


def check_writable(path, key="results_file", folder=False):
    """Fail before any training when the file ``path`` (with ``folder``: the folder ``path``,
    made if missing) cannot be written: a probe file is written beside it (in it) and removed.
    ``key`` names the setting in the message."""
    where = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(where, exist_ok=True)  # FileExistsError where a file holds the name
        if not folder and os.path.isdir(path):
            raise IsADirectoryError(f"'{path}' is a folder")
        probe = os.path.join(where, f".{'write' if folder else os.path.basename(path)}.{os.getpid()}.probe")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
        if not folder and os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(f"'{path}' is read-only")
    except OSError as err:
        raise ConfigFileError(f"{key} '{path}' cannot be written ({err}); choose another path") from None


def check_outputs(config):
    """The checkpoint folder takes files, before any training: RecBole writes the first
    checkpoint only after an epoch (a file of that name, a read-only folder failed there)."""
    check_writable(config["checkpoint_dir"], "checkpoint_dir", folder=True)


class _ResultsWriter:
    """``on_result`` for a comparison: merge the rows into the results file after every finished
    model. ``path`` is the file actually written: when the requested one cannot be (disk full, a
    read-only folder) the table goes to a temporary file, and ``fallback_reason`` says why."""

    def __init__(self, results_file, title, commands):
        self.requested = self.path = results_file
        self.title, self.commands = title, list(commands)
        self.fallback_reason = None
        self.rows_written = 0

    def __call__(self, results):
        if not self.requested:
            return
        try:
            write_results(self.path, results, self.title, self.commands)
        except OSError as err:
            if self.fallback_reason:
                raise  # the fallback failed too: nowhere left to write
            import tempfile

            fallback = os.path.join(
                tempfile.gettempdir(), f"recbole_cllm4rec-{os.getpid()}-{os.path.basename(self.requested)}"
            )
            self.fallback_reason = f"could not write {self.requested} ({err}); the table is in {fallback} instead"
            getLogger().warning(self.fallback_reason)
            print(f"warning: {self.fallback_reason}", file=sys.stderr)
            self.path = fallback
            # the requested file's rows (when readable) come along, so moving the fallback back loses none
            write_results(fallback, results, self.title, self.commands, merge_from=self.requested)
        self.rows_written = len(results)


def _writer(results_file, title, commands):
    return _ResultsWriter(results_file, title, commands)


class Comparison(tuple):
    """``(results, table)`` as ``compare`` has always returned, plus ``results_file``: the file
    actually written (``None`` without one), and ``fallback_reason`` when it is not the requested one."""

    def __new__(cls, results, table, writer):
        self = super().__new__(cls, (results, table))
        self.results_file = writer.path
        self.fallback_reason = writer.fallback_reason
        return self


def _compare_jobs(jobs, launch, writer):
    """``_run_isolated`` whose interrupt line also says where the finished rows are."""
    try:
        results = _run_isolated(jobs, launch, writer)
    except KeyboardInterrupt as err:
        rows = f"the finished models' rows are in {writer.path}" if writer.rows_written else "no model had finished"
        parts = [str(err) or "stopped between models", rows if writer.requested else ""]
        raise Interrupted("; ".join(p for p in parts if p), getattr(err, "signum", signal.SIGINT)) from None
    return Comparison(results, results_table(results), writer)


def _check_before_training(runs, dataset, config_file_list, results_file):
    """Every ``(model, config_dict)`` of a comparison builds its config (a typo in a model name,
    a bad value, metrics that disagree) and the results file is writable, before any trains."""
    if results_file:  # first: the checkpoint check below makes its folder
        check_writable(results_file)
    for model, config_dict in runs:
        check_outputs(build_config(model, dataset, config_file_list, config_dict))


def compare(
    models, dataset="ml-100k", config_file_list=None, config_dict=None, results_file=None, saved=True, **launch
):
    """Run several models on the same dataset and split; one side-by-side table. ``launch``:
    ``run``'s ``nproc``, ``world_size``, ``ip``, ``port``, ``group_offset``. The rows are merged
    into ``results_file`` after each model (``write_results``), and a model that fails gets a row
    saying why. Returns a ``Comparison``: ``results, table`` (this run's), ``.results_file``."""
    _refuse_unguarded_main("compare")
    _check_before_training([(m, config_dict) for m in models], dataset, config_file_list, results_file)
    writer = _ResultsWriter(
        results_file, f"{dataset}: {', '.join(models)}", [command_line(models, dataset, config_file_list, config_dict)]
    )
    return _compare_jobs([(m, (m, dataset, config_file_list, config_dict, saved)) for m in models], launch, writer)


def compare_variants(
    model, variants, dataset="ml-100k", config_file_list=None, config_dict=None, results_file=None, saved=True
):
    """One model under several settings (an ablation); ``variants`` maps a label to overrides."""
    _refuse_unguarded_main("compare_variants")
    settings = {label: {**(config_dict or {}), **overrides} for label, overrides in variants.items()}
    _check_before_training([(model, cfg) for cfg in settings.values()], dataset, config_file_list, results_file)
    commands = [f"{label}: {command_line([model], dataset, config_file_list, cfg)}" for label, cfg in settings.items()]
    writer = _ResultsWriter(results_file, f"{dataset}: {model} variants", commands)
    jobs = [(label, (model, dataset, config_file_list, cfg, saved)) for label, cfg in settings.items()]
    return _compare_jobs(jobs, None, writer)


def results_table(results):
    finished = [r for r in results if not r.get("failed")]
    metrics = list(finished[0]["test_result"]) if finished else []
    head = ["model"] + [f"test {m}" for m in metrics] + [f"valid {m}" for m in metrics] + ["train s", "peak RSS MB"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.get("failed"):
            reason = str(r["failed"]).replace("|", "/")
            rows.append("| " + " | ".join([r["model"], f"failed: {reason}"] + [""] * (len(head) - 2)) + " |")
            continue
        cells = [r["model"]] + [f"{r['test_result'].get(m, float('nan')):.4f}" for m in metrics]
        cells += [f"{r['best_valid_result'].get(m, float('nan')):.4f}" for m in metrics]
        cells += [f"{r['train_time_s']:.1f}", f"{r['peak_rss_mb']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def command_line(models, dataset, config_file_list, config_dict):
    parts = ["python run_recbole.py", f"--model={','.join(models)}", f"--dataset={dataset}"]
    if config_file_list:
        parts.append(f"--config_files='{' '.join(config_file_list)}'")
    parts += [f"--{k}={v}" for k, v in (config_dict or {}).items()]
    return " ".join(parts)


# ---- the results file: many runs may write one, none loses another's rows ---------------------
ROWS_MARK = "<!-- recbole_cllm4rec rows "  # the table's rows as json, on the file's last line


@contextmanager
def _locked(path):
    """An exclusive lock on ``.<name>.lock`` beside ``path``, held for a whole read-merge-write:
    runs writing the same file take turns, so none replaces the file from a stale read."""
    folder, name = os.path.split(os.path.abspath(path))
    fd = os.open(os.path.join(folder, f".{name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting run)


def _plain(value):
    """``value`` as json data (numpy and torch scalars become numbers)."""

    def default(obj):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _is_entry(entry):
    return (
        isinstance(entry, dict)
        and {"result", "title", "commands", "machine"} <= set(entry)
        and isinstance(entry["result"], dict)
        and "model" in entry["result"]
    )


def read_rows(path):
    """The rows a results file holds (``write_results``'s entries); ``[]`` for no file, and for
    a file without them (an older version's or a hand-made table: replaced, with a warning)."""
    if not path or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    data = [line for line in lines if line.startswith(ROWS_MARK) and line.endswith("-->")]
    try:
        entries = json.loads(data[-1][len(ROWS_MARK) : -len("-->")]) if data else None
        if isinstance(entries, list) and all(_is_entry(e) for e in entries):
            return entries
    except ValueError:
        pass
    if any(line.strip() for line in lines):
        message = (
            f"{path} holds no rows this version can merge (an older or hand-made table): its text is "
            f"kept below the new table"
        )
        getLogger().warning(message)
        print(f"warning: {message}", file=sys.stderr)
    return []


def kept_notes(path, previous):
    """The lines of the results file ``path`` that ``render_results(previous)`` did not write: a
    user's notes, or all of an older version's file. A rewrite keeps them (in order, above the
    rows line), so merging rows never loses what someone wrote there."""
    import difflib

    if not path or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        old = [line for line in f.read().splitlines() if not line.startswith(ROWS_MARK)]
    if not previous:
        return old if any(line.strip() for line in old) else []
    made = render_results(previous).splitlines()[:-1]  # without its rows line
    notes = []
    for tag, _, _, start, end in difflib.SequenceMatcher(None, made, old, autojunk=False).get_opcodes():
        if tag in ("insert", "replace"):
            notes += old[start:end]
    return notes if any(line.strip() for line in notes) else []


def merge_rows(previous, entries):
    """``previous`` rows (other runs') with this run's ``entries``: a row whose model label this
    run has is replaced (this run's rows go where the first of them was), the rest are kept."""
    labels = {e["result"]["model"] for e in entries}
    merged, placed = [], False
    for entry in previous:
        if entry["result"].get("model") not in labels:
            merged.append(entry)
        elif not placed:
            merged += entries
            placed = True
    return merged if placed else merged + entries


def _unique(values):
    return list(dict.fromkeys(values))


def render_results(entries, notes=()):
    """The markdown of a results file: titles, protocol(s), commands, the table, extra tables,
    per-stage numbers, ``notes`` (lines kept from the file this one replaces), and the rows as
    json on the last line (what the next writer merges)."""
    results = [e["result"] for e in entries]
    finished = [r for r in results if not r.get("failed")]
    protocols = {}
    for r in finished:
        protocols.setdefault(r["protocol"], []).append(r["model"])
    if len(protocols) > 1:  # runs of other protocols merged in: say which row is which
        protocol_lines = ["Protocols (rows under different protocols do not compare):", ""]
        protocol_lines += [f"- {', '.join(models)}: {p}." for p, models in protocols.items()]
    else:
        protocol_lines = [f"Protocol: {next(iter(protocols), 'no model finished')}."]
    lines = [
        f"# {'; '.join(_unique(e['title'] for e in entries))}",
        "",
        *protocol_lines,
        "",
        "Command(s):",
        "",
        *[f"    {c}" for c in _unique(c for e in entries for c in e["commands"])],
        "",
        f"Machine: {'; '.join(_unique(e['machine'] for e in entries))}. Train time is `trainer.fit` wall "
        f"time; peak RSS is the process's maximum resident set (one process per model).",
        "",
        results_table(results),
        "",
        *coldstart.extra_tables(finished),
    ]
    for r in finished:
        if r.get("stages"):
            lines += [
                f"{r['model']} stages (total {r['total_time_s']:.0f} s wall, peak RSS {r['peak_rss_mb']:.0f} MB):",
                "",
                "| stage | epochs | tokens | seconds | tokens/s |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {name} | {s['epochs']} | {s['tokens']} | {s['seconds']:.0f} | {s['tokens'] / s['seconds']:.0f} |"
                for name, s in r["stages"].items()
            ]
            lines.append("")
    if notes:
        lines += [*notes, ""] if notes[-1].strip() else list(notes)
    # json has '>' only inside strings, where \u003e reads back the same: no '-->' ends the comment early
    rows = json.dumps(entries).replace(">", "\\u003e")  # ascii: no character splits the line
    lines.append(f"{ROWS_MARK}{rows} -->")
    return "\n".join(lines) + "\n"


def write_results(path, results, title, commands, merge_from=None):
    """Merge this run's ``results`` into the results file ``path`` and rewrite it, with its
    protocol and the commands that reproduce it. Read, merge and an atomic replace happen under
    one lock, so runs writing the same file concurrently all keep their rows; a row of the same
    model label is replaced (a rerun updates it). ``merge_from``: where the rows to keep are
    read from while ``path`` does not exist yet (a fallback of an unwritable file)."""
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    machine = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {datetime.date.today().isoformat()}"
    entries = [{"result": r, "title": title, "commands": list(commands), "machine": machine} for r in _plain(results)]
    with _locked(path):
        source = path if os.path.exists(path) or not merge_from else merge_from
        try:
            previous = read_rows(source)
            notes = kept_notes(source, previous)
        except OSError:  # the unwritable file is unreadable too: only this run's rows
            previous, notes = [], []
        text = render_results(merge_rows(previous, entries), notes)
        tmp = f"{path}.{os.getpid()}.tmp"  # a reader (or a kill) never sees half a table
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
