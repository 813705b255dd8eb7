"""CLLM4Rec on a tiny random backbone (fast), plus the real SmolLM2 backbone loading offline."""

import os

import numpy as np
import pytest
import torch

import recbole_cllm4rec
from conftest import ROOT, TINY_CLLM4REC
from recbole_cllm4rec.batching import pad_batch
from recbole_cllm4rec.data.corpus import training_histories
from recbole_cllm4rec.data.reviews import read_reviews
from recbole_cllm4rec.llm import BackboneError, load_causal_lm, text_start_ids
from recbole_cllm4rec.model.cllm4rec import CLLM4Rec
from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer


def pairs(dataset):
    return set(zip(dataset.inter_feat[dataset.uid_field].tolist(), dataset.inter_feat[dataset.iid_field].tolist()))


def fresh_model(ml100k_tiny, **overrides):
    config, _, (train, _, _), _ = ml100k_tiny
    saved = {key: config[key] for key in overrides}
    for key, value in overrides.items():
        config[key] = value
    try:
        return CLLM4Rec(config, train._dataset)
    finally:
        for key, value in saved.items():
            config[key] = value


def test_id_words_are_atomic_tokens(ml100k_tiny):
    corpus = ml100k_tiny[3].corpus
    text = "user_3 has interacted with item_7 item_12, user_3 will interact with"
    ids = corpus.encode(text)
    id_range = ids[ids >= corpus.user_offset]
    assert id_range.tolist() == [
        corpus.user_offset + 3,
        corpus.item_offset + 7,
        corpus.item_offset + 12,
        corpus.user_offset + 3,
    ]
    assert len(corpus.tokenizer.encode("item_12", add_special_tokens=False)) > 1  # BPE alone would split it
    assert corpus.decode(ids) == text.replace(",", " ,").replace(" ,", ",")
    prompt = corpus.rec_prompt(3, np.array([7, 12]))
    assert prompt.tolist() == text_start_ids(corpus.tokenizer) + ids.tolist()


def test_corpora_hold_training_pairs_only(ml100k_tiny):
    config, dataset, (train, valid, test), model = ml100k_tiny
    corpus = model.corpus
    train_pairs, held_out = pairs(train._dataset), pairs(valid._dataset) | pairs(test._dataset)
    rng = np.random.default_rng(0)
    seen = set()
    for user in corpus.users_with_history():
        doc_items = corpus.collaborative_document(user, rng).main - corpus.item_offset
        visible, masked = corpus.split_history(user, rng, 0.2)
        for item in np.concatenate([doc_items, visible, masked, corpus.eval_history(user, 0)]):
            seen.add((int(user), int(item)))
    assert seen <= train_pairs and not seen & held_out


def test_review_corpus_keeps_training_pairs_only(workdir):
    from recbole.data import create_dataset, data_preparation

    from recbole_cllm4rec.data.reviews import read_reviews
    from recbole_cllm4rec.quick_start import build_config

    data_path = os.path.join(ROOT, "dataset")
    config = build_config("CLLM4Rec", "amazon-sample", config_dict=dict(TINY_CLLM4REC, data_path=data_path))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = CLLM4Rec(config, train._dataset)
    reviews = read_reviews(config["data_path"], "amazon-sample")
    docs = model.corpus.content_documents(config["content_documents"], reviews)
    review_docs = [d for d in docs if d.user]
    doc_pairs = {(d.user, d.item) for d in review_docs}
    assert len(review_docs) == len(pairs(train._dataset)) < len(reviews)
    assert doc_pairs == pairs(train._dataset) and not doc_pairs & pairs(test._dataset)
    # the review's own words are what the content LM learns
    user_token = dataset.id2token(dataset.uid_field, review_docs[0].user)
    item_token = dataset.id2token(dataset.iid_field, review_docs[0].item)
    text = next(r for u, i, r in reviews if u == user_token and i == item_token)
    assert (
        model.corpus.tokenizer.decode(review_docs[0].main).strip()
        == model.corpus.tokenizer.decode(model.corpus._text_ids(text)).strip()
    )


@pytest.mark.parametrize("stage,trained", [("collab", "collab"), ("content", "content"), ("rec", "rec")])
def test_gradients_reach_only_the_stage_tables(ml100k_tiny, stage, trained):
    model = ml100k_tiny[3]
    model.zero_grad(set_to_none=True)
    corpus = model.corpus
    users = corpus.users_with_history()[:4]
    if stage == "collab":
        lm, mr = model.collaborative_loss([corpus.collaborative_document(u, model.rng) for u in users])
    elif stage == "content":
        item_docs = [{"source": "item", "prompt": "{item} is titled:", "text": "{movie_title}"}]
        lm, mr = model.content_loss(corpus.content_documents(item_docs)[:4], "collab")
    else:
        lm, mr = model.rec_loss(model.recommendation_examples(users))
    assert mr.item() > 0
    (lm + mr).backward()
    for kind in ("collab", "content", "rec"):
        has_grad = [t.grad is not None and bool(t.grad.abs().sum() > 0) for t in model.parameters_of(kind)]
        assert any(has_grad) == (kind == trained), (stage, kind)
    assert all(p.grad is None for p in model.backbone.parameters())
    model.zero_grad(set_to_none=True)


def _fit_fixed_batch(model, loss_fn, tables, steps=25):
    optimizer = torch.optim.Adam(model.parameters_of(tables), lr=0.05)
    losses = []
    for _ in range(steps):
        model.rng = np.random.default_rng(0)  # the same mask every step: a fixed batch
        lm, _ = loss_fn()
        optimizer.zero_grad()
        lm.backward()
        optimizer.step()
        losses.append(lm.item())
    return losses


def test_each_language_model_loss_falls(ml100k_tiny):
    model = fresh_model(ml100k_tiny)
    corpus = model.corpus
    users = corpus.users_with_history()[:8]
    collab_docs = [corpus.collaborative_document(u, np.random.default_rng(0), reorder=False) for u in users]
    content_docs = corpus.content_documents(
        [{"source": "item", "prompt": "{item} is titled:", "text": "{movie_title} ({release_year})"}]
    )[:8]
    # content learns through one prompt word per document only, so it falls more slowly; the
    # recommendation loss predicts the masked items: with target "all" a user's ~70 targets put
    # the loss floor (n log n) near 0.55 of its start, which says little about learning
    masked = fresh_model(ml100k_tiny, finetune_target="masked")
    for trained, loss_fn, tables, ratio in [
        (model, lambda: model.collaborative_loss(collab_docs), "collab", 0.7),
        (model, lambda: model.content_loss(content_docs, None), "content", 0.9),
        (masked, lambda: masked.rec_loss(masked.recommendation_examples(users)), "rec", 0.7),
    ]:
        losses = _fit_fixed_batch(trained, loss_fn, tables)
        assert losses[-1] < ratio * losses[0], (tables, losses[0], losses[-1])


def test_rec_head_ranks_planted_held_out_items_above_random(ml100k_tiny):
    """Finetune on fixed masks; the masked (held-out) items then outrank random items."""
    model = fresh_model(ml100k_tiny)
    users = model.corpus.users_with_history()[:16]
    _fit_fixed_batch(model, lambda: model.rec_loss(model.recommendation_examples(users)), "rec", steps=30)
    model.rng = np.random.default_rng(0)
    visible, targets = zip(*(model.corpus.split_history(u, model.rng, model.mask_ratio) for u in users))
    with torch.no_grad():
        scores = model.rec_scores(users, visible)
    hits, random_hits = [], []
    for row, held_out in enumerate(targets):
        ranks = torch.argsort(torch.argsort(scores[row], descending=True))
        hits.append(ranks[torch.as_tensor(held_out)].float().mean())
        random_hits.append(ranks[torch.randint(1, model.n_items, (50,))].float().mean())
    assert np.mean(hits) < 0.25 * np.mean(random_hits)


def test_recbole_contract_calculate_loss_predict_and_the_stock_trainer(ml100k_tiny, workdir):
    """RecBole's own calls work on CLLM4Rec: calculate_loss on an interaction batch is rec_loss on
    its users, RecBole's stock Trainer trains the recommendation tables through it, and predict
    reads full_sort_predict's scores of the given items."""
    from recbole.data.interaction import Interaction
    from recbole.trainer import Trainer

    config, _, (train, _, _), _ = ml100k_tiny
    model = fresh_model(ml100k_tiny)
    batches = [batch for _, batch in zip(range(2), train)]
    users = torch.unique(batches[0][model.USER_ID]).numpy()
    model.rng = np.random.default_rng(0)
    direct = model.rec_loss(model.recommendation_examples(users[[len(model.corpus.histories[u]) > 0 for u in users]]))
    model.rng = np.random.default_rng(0)
    through_recbole = model.calculate_loss(batches[0])
    assert all(torch.allclose(a, b) for a, b in zip(through_recbole, direct))

    before = model.user_rec.weight.detach().clone()
    losses = Trainer(config, model)._train_epoch(batches, 0)  # a short epoch of two interaction batches
    assert np.isfinite(sum(losses)) and not torch.equal(before, model.user_rec.weight)

    inter = Interaction({model.USER_ID: torch.tensor([1, 2, 3]), model.ITEM_ID: torch.tensor([5, 6, 7])})
    full = model.full_sort_predict(inter)
    assert torch.equal(model.predict(inter), full[torch.arange(3), inter[model.ITEM_ID]])


def test_end_to_end_save_and_reload_through_recbole(workdir):
    """The staged trainer runs on ml-100k, beats random ranking, and a saved model reloads
    through RecBole's load_data_and_model (LoRA adapters included) to the same scores and metrics."""
    result = recbole_cllm4rec.run("CLLM4Rec", "ml-100k", config_dict=dict(TINY_CLLM4REC, lora_rank=2))
    assert result["test_result"]["ndcg@10"] > 0.018  # 3x random ranking (~0.006)
    checkpoint = torch.load(result["model_file"], weights_only=False)
    assert not any(k.startswith("backbone.") for k in checkpoint["state_dict"])  # tables and adapters only
    assert any(k.startswith("lora.") for k in checkpoint["state_dict"])

    from recbole.quick_start import load_data_and_model
    from recbole.utils import get_trainer
    from recbole.utils.case_study import full_sort_scores

    config, model, dataset, train, valid, test = load_data_and_model(result["model_file"])
    assert isinstance(model, CLLM4Rec)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test, load_best_model=False, show_progress=False)
    assert dict(reloaded) == result["test_result"]
    users = torch.tensor([1, 2, 3])
    assert torch.equal(full_sort_scores(users, model, test), full_sort_scores(users, model, test))


def test_ablation_switches(ml100k_tiny):
    model = fresh_model(ml100k_tiny, mr_weight=0.0)
    _, mr = model.rec_loss(model.recommendation_examples(model.corpus.users_with_history()[:4]))
    assert mr.item() == 0
    model = fresh_model(ml100k_tiny, finetune_target="all")
    model.zero_grad()
    rec_all, _ = model.rec_loss(model.recommendation_examples(model.corpus.users_with_history()[:4]))
    model = fresh_model(ml100k_tiny, finetune_target="masked")
    rec_masked, _ = model.rec_loss(model.recommendation_examples(model.corpus.users_with_history()[:4]))
    assert rec_all.item() > rec_masked.item()  # more targets, larger summed likelihood
    with pytest.raises(ValueError, match="mask_ratio"):
        fresh_model(ml100k_tiny, mask_ratio=1.5)


def test_readout_layers_run_the_first_layers_only_and_leave_the_backbone_whole(ml100k_tiny):
    model = fresh_model(ml100k_tiny)  # readout_layers 1 of 2
    base = model.backbone.base_model
    ids = torch.as_tensor(model.corpus.rec_prompt(1, model.corpus.histories[1][:5]))[None]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = base(inputs_embeds=model.embed(ids, "rec"), attention_mask=mask, output_hidden_states=True)
        after_first = base.norm(full.hidden_states[1])
        assert torch.allclose(model.hidden_states(ids, mask, "rec"), after_first, atol=1e-5)
        # the content LM keeps the whole depth for its vocabulary head
        content = base(inputs_embeds=model.embed(ids, "content"), attention_mask=mask).last_hidden_state
        assert torch.allclose(model.hidden_states(ids, mask, "content"), content, atol=1e-5)
        assert not torch.allclose(after_first, full.last_hidden_state, atol=1e-3)
    assert len(base.layers) == 2 and base.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="readout_layers"):
        fresh_model(ml100k_tiny, readout_layers=3)


def test_mean_readout_averages_the_item_positions_and_last_reads_the_end(ml100k_tiny):
    model = fresh_model(ml100k_tiny)
    items = model.corpus.histories[1][:5]
    ids, mask = pad_batch([model.corpus.rec_prompt(1, items)], model.corpus.pad_id)
    with torch.no_grad():
        states = model.hidden_states(ids, mask, "rec")[0]
        at_items = states[torch.as_tensor(ids[0] >= model.corpus.item_offset)]
        assert at_items.shape[0] == 5
        assert torch.allclose(model.prompt_states([1], [items])[0], at_items.mean(0), atol=1e-5)
        # no visible item: zeros, so the item bias (log popularity) alone ranks
        assert torch.equal(model.prompt_states([1], [items[:0]])[0], torch.zeros_like(states[0]))
        assert torch.equal(model.rec_scores([1], [items[:0]])[0, 1:], model.item_bias["rec"][1:])
    model = fresh_model(ml100k_tiny, readout="last")
    with torch.no_grad():
        states = model.hidden_states(ids, mask, "rec")[0]
        assert torch.equal(model.prompt_states([1], [items])[0], states[-1])


def test_item_bias_starts_at_log_popularity_and_the_paper_head_has_none(ml100k_tiny):
    model = fresh_model(ml100k_tiny)
    counts = np.bincount(np.concatenate(model.corpus.histories), minlength=model.n_items)
    bias = model.item_bias["collab"].detach()
    assert torch.equal(bias, model.item_bias["rec"].detach())
    assert bias[int(counts.argmax())] == bias.max() and bias[int(counts[1:].argmin()) + 1] == bias[1:].min()
    assert torch.isclose(torch.logsumexp(bias, 0), torch.tensor(0.0), atol=1e-5)
    paper = fresh_model(ml100k_tiny, item_bias=False, scaled_item_logits=False, id_input_scale=1.0)
    assert len(paper.item_bias) == 0 and paper.parameters_of("rec") == [paper.user_rec.weight, paper.item_rec.weight]
    states = torch.randn(2, paper.backbone.config.hidden_size)
    assert torch.equal(paper.item_logits(states, "rec")[:, 1:], (states @ paper.item_rec.weight.t())[:, 1:])


def test_training_leaves_the_backbone_bit_identical(ml100k_tiny):
    config, _, (train, valid, _), _ = ml100k_tiny
    model = fresh_model(ml100k_tiny)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    tables = {k: v.clone() for k, v in model.state_dict().items()}
    CLLM4RecTrainer(config, model).fit(train, valid, saved=False)
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(tables[k], v)}
    assert {
        "user_rec.weight",
        "item_rec.weight",
        "item_bias.rec",
        "item_collab.weight",
        "item_content.weight",
    } <= changed


def test_lora_trains_its_adapters_only_and_acts_in_the_recommendation_lm_only(ml100k_tiny):
    config, _, (train, valid, _), _ = ml100k_tiny
    model = fresh_model(ml100k_tiny, lora_rank=2)
    plain = fresh_model(ml100k_tiny)
    assert len(model.lora) == 4 * config["readout_layers"]  # q, k, v, o of each read-out layer
    users = model.corpus.users_with_history()[:4]
    ids, mask = pad_batch(
        [model.corpus.rec_prompt(u, model.corpus.histories[u][:5]) for u in users], model.corpus.pad_id
    )

    def states(m, kind):
        with torch.no_grad():
            return m.hidden_states(ids, mask, kind)

    def same_tables():
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("lora.")})

    same_tables()
    assert torch.allclose(states(model, "rec"), states(plain, "rec"))  # B starts at 0: a no-op
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    adapters = [p.detach().clone() for p in model.lora.parameters()]
    CLLM4RecTrainer(config, model).fit(train, valid, saved=False)
    assert all(torch.equal(backbone[k], v) for k, v in model.backbone.state_dict().items())
    assert all(not torch.equal(a, p) for a, p in zip(adapters, model.lora.parameters()))
    same_tables()
    assert not torch.allclose(states(model, "rec"), states(plain, "rec"))
    for kind in ("collab", "content"):
        assert torch.equal(states(model, kind), states(plain, kind)), kind


def test_training_histories_match_the_split(ml100k_tiny):
    _, _, (train, _, _), model = ml100k_tiny
    histories = training_histories(train._dataset)
    assert sum(len(h) for h in histories) == len(train._dataset.inter_feat)


def test_unloadable_backbone_says_what_to_do():
    with pytest.raises(BackboneError, match="llm_path"):
        load_causal_lm("/no/such/model-folder")
    with pytest.raises(BackboneError, match="does not exist"):
        load_causal_lm("/no/such/model.gguf")


def test_real_smollm2_loads_offline_and_speaks():
    model, tokenizer = load_causal_lm("smollm2-135m")
    assert model.num_parameters() > 130e6 and model.config.num_hidden_layers == 30
    ids = torch.tensor([text_start_ids(tokenizer) + tokenizer.encode("The capital of France is")])
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_review_sample_runs_multivae_and_cllm4rec_with_review_text(workdir):
    """The converted review sample through RecBole end to end: a baseline, and CLLM4Rec whose
    content stages learn from the review side file."""
    data_path = os.path.join(ROOT, "dataset")
    quiet = {"show_progress": False, "state": "WARNING", "data_path": data_path}
    baseline = recbole_cllm4rec.run("MultiVAE", "amazon-sample", config_dict=dict(quiet, epochs=2))
    assert "trecall@10" in baseline["test_result"]
    result = recbole_cllm4rec.run("CLLM4Rec", "amazon-sample", config_dict=dict(TINY_CLLM4REC, **quiet))
    reviews = read_reviews(os.path.join(data_path, "amazon-sample"), "amazon-sample")
    # item documents alone (37 item ids, prompt <= 10 tokens, text cut to max_text_tokens) stay
    # under this bound; the rest of an epoch's tokens are the review documents
    item_only_bound = 37 * (10 + TINY_CLLM4REC["max_text_tokens"])
    assert len(reviews) > 200 and result["stages"]["content(no MR)"]["tokens"] > 3 * item_only_bound
    assert "trecall@10" in result["test_result"]


def test_masked_target_weight_scales_the_hidden_items_only(ml100k_tiny):
    """The loss with hidden items weighted w equals shown-items NLL + w x hidden-items NLL."""
    model = fresh_model(ml100k_tiny, finetune_target="all")
    model.corpus.max_doc_items = 10**6  # whole histories in the prompt: the hidden items are the masked ones
    users = model.corpus.users_with_history()[:4]

    def loss(target, weight):
        model.finetune_target, model.masked_target_weight = target, weight
        model.rng = np.random.default_rng(0)  # the same masks each time
        return model.rec_loss(model.recommendation_examples(users))[0]

    assert torch.allclose(loss("all", 3.0), loss("all", 1.0) + 2 * loss("masked", 1.0), rtol=1e-5)
    with pytest.raises(ValueError, match="masked_target_weight"):
        fresh_model(ml100k_tiny, masked_target_weight=0.0)


def test_cosine_schedule_and_several_masks_per_epoch(ml100k_tiny):
    """cosine sets each epoch's lr from the epoch index alone; masks_per_epoch k draws every
    user k times an epoch, each time with its own mask."""
    config, _, (train, _, _), _ = ml100k_tiny
    saved = {k: config[k] for k in ("learning_rate_schedule", "masks_per_epoch", "epochs")}
    try:
        config["learning_rate_schedule"], config["masks_per_epoch"], config["epochs"] = "cosine", 2, 4
        model = fresh_model(ml100k_tiny)
        trainer = CLLM4RecTrainer(config, model)
        rates = []
        for epoch in (0, 2, 3, 0):
            trainer._set_epoch_learning_rate(epoch)
            rates.append(trainer.optimizer.param_groups[0]["lr"])
        base = config["learning_rate"]
        assert rates == pytest.approx([base, base / 2, base * (1 + np.cos(np.pi * 3 / 4)) / 2, base])
        drawn = []
        original = model.recommendation_examples
        model.recommendation_examples = lambda users: drawn.append(list(users)) or original(users)
        trainer._train_epoch(train, 0)
        counts = np.bincount(np.concatenate(drawn))
        assert set(counts[model.corpus.users_with_history()]) == {2}
    finally:
        config.final_config_dict.update(saved)


def test_ranking_averages_the_scores_of_several_history_orders(ml100k_tiny):
    """eval_prompt_draws K ranks by the mean of K read-outs, each over its own seeded order of
    the history; the first draw is the single-draw ranking."""
    from recbole.data.interaction import Interaction

    from recbole_cllm4rec.model.cold_items import ranking_rows

    model = fresh_model(ml100k_tiny).eval()
    users = model.corpus.users_with_history()[:3]
    batch = Interaction({model.USER_ID: torch.as_tensor(users)})
    model.eval_prompt_draws = 1
    single = model.full_sort_predict(batch)
    rows = ranking_rows(model)  # the default's text prior on every item's row
    per_draw = [
        model.rec_scores(users, [model.corpus.eval_history(u, model.seed, d) for u in users], rows) for d in range(3)
    ]
    model.eval_prompt_draws = 3
    averaged = model.full_sort_predict(batch)
    assert torch.allclose(single[:, 1:], per_draw[0][:, 1:], atol=1e-5)
    assert torch.allclose(averaged[:, 1:], sum(per_draw)[:, 1:] / 3, atol=1e-5)
    assert not torch.allclose(per_draw[0][:, 1:], per_draw[1][:, 1:])  # the orders differ
    assert {int(i) for i in model.corpus.eval_history(users[0], model.seed, 1)} == set(
        model.corpus.histories[users[0]].tolist()
    )


def test_frozen_user_rows_stay_as_pretrained_while_the_item_rows_train(ml100k_tiny):
    config, _, (train, valid, _), _ = ml100k_tiny
    model = fresh_model(ml100k_tiny, train_rec_user_rows=False)
    assert all(p is not model.user_rec.weight for p in model.parameters_of("rec"))
    items = model.item_rec.weight.clone()
    CLLM4RecTrainer(config, model).fit(train, valid, saved=False)
    # the rec user rows are the collaborative ones pretraining left, untouched by finetuning
    assert torch.equal(model.user_rec.weight, model.user_collab.weight)
    assert not torch.equal(model.item_rec.weight, model.item_collab.weight) and not torch.equal(
        items, model.item_rec.weight
    )
