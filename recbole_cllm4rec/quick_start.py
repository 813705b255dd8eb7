"""``run`` trains and tests one model the way RecBole's ``run_recbole`` does; ``compare`` runs
several on the same dataset and split and writes one side-by-side table."""

import datetime
import logging
import multiprocessing
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from logging import getLogger

import yaml

from recbole_cllm4rec import coldstart, validation
from recbole_cllm4rec.registry import check_dataset, get_model, get_trainer, properties_dir, property_file


class ConfigFileError(ValueError):
    def __init__(self, message):  # one line (a yaml error spans several), as the CLI prints it
        super().__init__(" ".join(str(message).split()))


def parse_overrides(args):
    """``--key=value`` pairs, values read as yaml (``0.01``, ``[10,20]``, ``true``, ``{RS: [...]}``)."""
    overrides = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            print(f"error: unrecognised argument '{arg}'; overrides take the form --key=value", file=sys.stderr)
            raise SystemExit(2)
        key, value = arg[2:].split("=", 1)
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
            with open(path, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigFileError(f"config file '{path}' is not valid yaml: {err}") from err
        if content is not None and not isinstance(content, dict):
            raise ConfigFileError(f"config file '{path}' must hold 'key: value' lines, not {type(content).__name__}")
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
    train_data, valid_data, test_data = data_preparation(config, data)
    validation.check_data(config, data, train_data, valid_data, test_data)  # before any model is built

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    recommender = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(recommender)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
    if config["resume_file"]:
        if not os.path.isfile(config["resume_file"]):
            raise ConfigFileError(f"resume_file '{config['resume_file']}' does not exist")
        trainer.resume_checkpoint(config["resume_file"])

    fit_start = time.time()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    train_time = time.time() - fit_start
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    extra = coldstart.extra_results(config, trainer, train_data, test_data, config["show_progress"])
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
    """Whether ``run``'s launch arguments ask for torch DDP ranks rather than one process."""
    return nproc > 1 or world_size > 0


def _run_rank(local_rank, args, queue):
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
    for folder in (os.path.join("log", config["model"]), config["checkpoint_dir"]):
        os.makedirs(folder, exist_ok=True)
    queue = mp.get_context("spawn").SimpleQueue()
    ranks = {"world_size": world_size, "ip": ip, "port": str(port), "nproc": nproc, "offset": group_offset}
    args = (model, dataset, config_file_list, {**(config_dict or {}), **ranks}, saved)
    start = time.time()
    mp.spawn(_run_rank, args=(args, queue), nprocs=nproc, join=True)
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


def _run_in_child(args):
    return run(*args)


def _run_isolated(jobs, launch=None, on_result=None):
    """Run each ``(label, run arguments)`` job in fresh processes, so peak memory is its own;
    ``launch`` holds ``run``'s multi-process arguments (its ranks are fresh processes already).
    A job that fails (an error, or its process killed) gives a row ``{"model", "failed"}`` and the
    next job runs; ``on_result(results so far)`` is called after every job."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    results = []
    for label, args in jobs:
        try:
            if is_multi_process(**(launch or {})):
                result = run(*args, **launch)
            else:
                # an executor, not a Pool: a Pool respawns a worker that dies and waits forever
                with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                    result = pool.submit(_run_in_child, args).result()
        except BrokenProcessPool:
            result = {"failed": "its process died (killed, or out of memory?) before returning a result"}
        except Exception as err:  # noqa: BLE001  one model's failure must not lose the others' rows
            first = (str(err).strip().splitlines() or [""])[0]
            result = {"failed": f"{type(err).__name__}: {first}" if first else type(err).__name__}
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


def check_writable(path):
    """Fail before any training when the results file cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(f"'{path}' is a folder")
        probe = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.probe")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(f"'{path}' is read-only")
    except OSError as err:
        raise ConfigFileError(f"results_file '{path}' cannot be written ({err}); choose another path") from None


def _writer(results_file, title, commands):
    """``on_result`` for a comparison: rewrite the table after every finished model."""
    state = {"path": results_file}

    def write(results):
        if not results_file:
            return
        table = results_table(results)
        try:
            write_results(state["path"], results, table, title, commands)
        except OSError as err:
            import tempfile

            fallback = os.path.join(
                tempfile.gettempdir(), f"recbole_cllm4rec-{os.getpid()}-{os.path.basename(results_file)}"
            )
            message = f"could not write {state['path']} ({err}); the table goes to {fallback}"
            getLogger().warning(message)
            print(f"warning: {message}", file=sys.stderr)
            state["path"] = fallback
            write_results(fallback, results, table, title, commands)

    return write


def _check_before_training(runs, dataset, config_file_list, results_file):
    """Every ``(model, config_dict)`` of a comparison builds its config (a typo in a model name,
    a bad value, metrics that disagree) and the results file is writable, before any trains."""
    for model, config_dict in runs:
        build_config(model, dataset, config_file_list, config_dict)
    if results_file:
        check_writable(results_file)


def compare(
    models, dataset="ml-100k", config_file_list=None, config_dict=None, results_file=None, saved=True, **launch
):
    """Run several models on the same dataset and split; one side-by-side table. ``launch``:
    ``run``'s ``nproc``, ``world_size``, ``ip``, ``port``, ``group_offset``. The table is
    rewritten after each model, and a model that fails gets a row saying why."""
    _refuse_unguarded_main("compare")
    _check_before_training([(m, config_dict) for m in models], dataset, config_file_list, results_file)
    write = _writer(
        results_file, f"{dataset}: {', '.join(models)}", [command_line(models, dataset, config_file_list, config_dict)]
    )
    results = _run_isolated([(m, (m, dataset, config_file_list, config_dict, saved)) for m in models], launch, write)
    return results, results_table(results)


def compare_variants(
    model, variants, dataset="ml-100k", config_file_list=None, config_dict=None, results_file=None, saved=True
):
    """One model under several settings (an ablation); ``variants`` maps a label to overrides."""
    _refuse_unguarded_main("compare_variants")
    settings = {label: {**(config_dict or {}), **overrides} for label, overrides in variants.items()}
    _check_before_training([(model, cfg) for cfg in settings.values()], dataset, config_file_list, results_file)
    commands = [f"{label}: {command_line([model], dataset, config_file_list, cfg)}" for label, cfg in settings.items()]
    write = _writer(results_file, f"{dataset}: {model} variants", commands)
    results = _run_isolated(
        [(label, (model, dataset, config_file_list, cfg, saved)) for label, cfg in settings.items()], on_result=write
    )
    return results, results_table(results)


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


def write_results(path, results, table, title, commands):
    """Write the table with its protocol and the commands that reproduce it."""
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    finished = [r for r in results if not r.get("failed")]
    lines = [
        f"# {title}",
        "",
        f"Protocol: {finished[0]['protocol'] if finished else 'no model finished'}.",
        "",
        "Command(s):",
        "",
        *[f"    {c}" for c in commands],
        "",
        f"Machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}. Train time is `trainer.fit` wall time; peak RSS is "
        f"the process's maximum resident set (one process per model).",
        "",
        table,
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
    tmp = f"{path}.{os.getpid()}.tmp"  # a reader (or a kill) never sees half a table
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
