"""Train and test models on a RecBole dataset, RecBole's CLI conventions.

python run_recbole.py --model=CLLM4Rec                       # ml-100k, the embedded default
python run_recbole.py --model=LightGCN,MultiVAE,EASE -d ml-100k   # side-by-side table
python run_recbole.py -m BPR --config_files="my.yaml" --learning_rate=0.01
"""

import argparse
import signal
import sys


def main(argv=None):
    """The CLI; a Ctrl-C (SIGINT) or SIGTERM is one ``interrupted: ...`` line and exit code 128 + signal."""
    try:
        return _main(argv)
    except KeyboardInterrupt as err:  # quick_start.Interrupted says what was saved where
        line = " ".join(str(err).split()) or "stopped before any model trained; nothing saved"
        print(f"interrupted: {line}", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)


class _RepeatedFlag(Exception):
    pass


class _Once(argparse._StoreAction):
    """Stores an option's value; the same option given twice (argparse keeps the last silently,
    also when one is spelt -m or abbreviated) is an error naming both values."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = vars(namespace).setdefault("_given", {})
        name = next((o for o in self.option_strings if o.startswith("--")), option_string)
        if self.dest in given:
            raise _RepeatedFlag(f"{name} is given twice ({given[self.dest]!r} and {values!r}): keep one of them")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


def _main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.register("action", None, _Once)  # the default action of every option that takes a value
    parser.add_argument("--model", "-m", default="CLLM4Rec", help="model name, or a comma list to compare")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument(
        "--results_file",
        default=None,
        help="markdown table of the run(s); default results/<dataset>.md for a comparison",
    )
    parser.add_argument("--list_models", action="store_true")
    parser.add_argument(
        "--nproc", type=int, default=1, help="processes on this machine (torch DDP; gloo on CPU, NCCL on GPU)"
    )
    parser.add_argument("--world_size", type=int, default=-1, help="ranks over all machines (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the machine holding rank 0")
    parser.add_argument("--port", default="5678", help="free port on that machine")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    try:
        args, rest = parser.parse_known_args(argv)
    except _RepeatedFlag as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import recbole_cllm4rec
    from recbole_cllm4rec.quick_start import parse_overrides, stop_on_signals
    from recbole_cllm4rec.registry import available_models

    stop_on_signals()  # SIGTERM too becomes the one-line stop, and a comparison stops its worker

    if args.list_models:
        ours, theirs = available_models()
        print("this package:", ", ".join(ours))
        print("RecBole:", ", ".join(theirs))
        return 0
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models:
        print(
            f"error: --model={args.model!r} names no model: give a name (e.g. --model=BPR) or a comma "
            f"list (--model=BPR,LightGCN); --list_models lists them",
            file=sys.stderr,
        )
        return 2
    config_files = args.config_files.split() if args.config_files else None
    overrides = parse_overrides(rest)
    launch = {
        "nproc": args.nproc,
        "world_size": args.world_size,
        "ip": args.ip,
        "port": args.port,
        "group_offset": args.group_offset,
    }
    try:
        if len(models) == 1 and not args.results_file:
            result = recbole_cllm4rec.run(models[0], args.dataset, config_files, overrides, **launch)
            if result is None:
                print("this machine's ranks finished; rank 0 reports the results")
                return 0
            print(f"best valid: {result['best_valid_result']}\ntest: {result['test_result']}")
            print(
                f"train {result['train_time_s']:.1f} s, total {result['total_time_s']:.1f} s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB, model file {result['model_file']}"
            )
        else:
            results_file = args.results_file or f"results/{args.dataset}.md"
            comparison = recbole_cllm4rec.compare(models, args.dataset, config_files, overrides, results_file, **launch)
            results, table = comparison
            print(table)
            print(f"\nwritten to {comparison.results_file}")  # a fallback when results_file could not be written
            if comparison.fallback_reason:
                print(f"warning: {comparison.fallback_reason}", file=sys.stderr)
            failed = [r["model"] for r in results if r.get("failed")]
            if failed:  # the table keeps the finished rows; the exit code still says a run failed
                print(f"error: {', '.join(failed)} failed; the table says why", file=sys.stderr)
                return 1
    except recbole_cllm4rec.USER_ERRORS as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # always one line
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
