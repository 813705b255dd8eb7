"""CLLM4Rec's training throughput: pipeline efficiency and 1 vs N processes.

    python benchmarks/scaleout.py                                # ml-100k, SmolLM2, nproc 1 and 2
    python benchmarks/scaleout.py --nproc 1,4 --batches 20 --epochs=2

Two measurements, written with the commands to results/scaleout-<dataset>-<cpu|cuda>.md:

1. **Efficiency.** For the collaborative and recommendation stages, the first ``--batches``
   training batches (after one warm-up batch) are timed twice on the same padded shapes: once
   through the pipeline with the model's settings (ID embedding mix, loss, backward to the
   tables, MR, optimiser step) and once as the bare backbone's forward + backward from random
   ``inputs_embeds`` (the same autocast and attention). Efficiency = pipeline tokens/s over
   bare tokens/s, tokens counting non-padding positions.
2. **Scale-out.** Whole runs (``run_recbole.py --nproc=N``) of a short schedule, given by the
   extra ``--key=value`` arguments (default: no content stages, one collaborative epoch, one
   finetuning epoch), for each N: wall time and tokens/s per stage.
"""

import argparse
import os
import sys
import time

from recbole_cllm4rec.quick_start import parse_overrides

SHORT_SCHEDULE = {
    "use_content": False,
    "content_warmup_epochs": 0,
    "pretrain_epochs": 1,
    "epochs": 1,
    "show_progress": False,
}


def stage_batches(trainer, stage, n):
    """The first ``n + 1`` global batches the trainer would train ``stage`` on, built by the
    trainer's own methods, as (examples, loss function, optimiser, tables, units function,
    padded ids, mask)."""
    from recbole_cllm4rec.batching import pad_batch

    model, corpus = trainer.model, trainer.model.corpus
    out = []
    if stage == "collaborative":
        docs = corpus.collaborative_corpus(model.rng)
        for batch in trainer.lm_batches(docs)[: n + 1]:
            examples = [docs[i] for i in batch]
            ids, mask, *_ = model._lm_batch(examples)
            out.append(
                (
                    examples,
                    model.collaborative_loss,
                    trainer.collab_optimizer,
                    model.parameters_of("collab"),
                    model.lm_target_count,
                    ids,
                    mask,
                )
            )
    else:
        users = corpus.users_with_history()
        for batch in trainer.recommendation_batches(users)[: n + 1]:
            examples = model.recommendation_examples(users[batch])
            ids, mask = pad_batch([corpus.rec_prompt(u, v) for u, v, _ in examples], corpus.pad_id)
            out.append((examples, model.rec_loss, trainer.optimizer, model.parameters_of("rec"), len, ids, mask))
    return out


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def efficiency(model_name, dataset, overrides, n_batches):
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_cllm4rec.quick_start import build_config
    from recbole_cllm4rec.registry import get_model, get_trainer

    config = build_config(model_name, dataset, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    backbone, device = model.backbone.base_model, model.device
    rows = []
    for stage in ("collaborative", "recommend"):
        batches = stage_batches(trainer, stage, n_batches)
        tokens = sum(int(mask.sum()) for *_, mask in batches[1:])
        # pipeline: exactly the trainer's step
        for i, (examples, loss_fn, optimizer, params, units, _, _) in enumerate(batches):
            if i == 1:
                _sync(device)
                start = time.time()
            trainer._step(optimizer, params, loss_fn, examples, units)
        _sync(device)
        pipeline = tokens / (time.time() - start)
        # bare backbone on the same shapes
        hidden = backbone.config.hidden_size
        for i, (*_, ids, mask) in enumerate(batches):
            if i == 1:
                _sync(device)
                start = time.time()
            embeds = (torch.randn(*ids.shape, hidden, device=device) * 0.02).requires_grad_()
            with model.autocast_context():
                out = backbone(inputs_embeds=embeds, attention_mask=torch.as_tensor(mask, device=device))
            out.last_hidden_state.float().sum().backward()
        _sync(device)
        bare = tokens / (time.time() - start)
        rows.append((stage, len(batches) - 1, tokens, pipeline, bare))
    return rows, config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--nproc", default="1,2", help="comma list of process counts for whole runs ('' skips them)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per stage for the efficiency ratio")
    parser.add_argument("--results_file", default=None)
    args, rest = parser.parse_known_args()
    user = parse_overrides(rest)
    overrides = {**SHORT_SCHEDULE, **user}

    import torch

    import recbole_cllm4rec
    from recbole_cllm4rec.quick_start import command_line

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, config = efficiency("CLLM4Rec", args.dataset, {"show_progress": False, **user}, args.batches)
    lines = [
        f"# CLLM4Rec throughput on {args.dataset} ({device})",
        "",
        f"Backbone {config['llm_path']}, autocast {config['autocast']}, attention "
        f"{config['attn_implementation']}; {os.cpu_count()} CPU cores, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if device == "cuda" else "")
        + ".",
        "",
        "Command:",
        "",
        "    python benchmarks/scaleout.py " + " ".join(sys.argv[1:]),
        "",
        "## Pipeline efficiency (one process)",
        "",
        "| stage | batches | tokens | pipeline tokens/s | bare backbone fwd+bwd tokens/s | efficiency |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {s} | {b} | {t} | {p:.0f} | {bare:.0f} | {p / bare:.2f} |" for s, b, t, p, bare in rows]
    print("\n".join(lines[-len(rows) - 2 :]), flush=True)

    nprocs = [int(n) for n in args.nproc.split(",") if n.strip()]
    if nprocs:
        lines += [
            "",
            "## Whole runs",
            "",
            f"Schedule: {command_line(['CLLM4Rec'], args.dataset, None, overrides)} --nproc=N",
            "",
            "| nproc | wall s | train s | test ndcg@10 | "
            + " | ".join(f"{s} tokens/s" for s in ("collaborative", "recommend"))
            + " |",
            "|---|---|---|---|---|---|",
        ]
        for n in nprocs:
            port = str(29500 + n)
            result = recbole_cllm4rec.run("CLLM4Rec", args.dataset, config_dict=overrides, nproc=n, port=port)
            stages = result["stages"]
            speeds = [
                f"{stages[s]['tokens'] / stages[s]['seconds']:.0f}" if s in stages else "-"
                for s in ("collaborative", "recommend")
            ]
            lines.append(
                f"| {n} | {result['total_time_s']:.0f} | {result['train_time_s']:.0f} | "
                f"{result['test_result']['ndcg@10']:.4f} | " + " | ".join(speeds) + " |"
            )
            print(lines[-1], flush=True)
    path = args.results_file or f"results/scaleout-{args.dataset}-{device}.md"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
