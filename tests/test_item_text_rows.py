"""CLLM4Rec's ``item_text_rows`` (item rows = ID row + a trained map of the item text's LM state)
and ``softmax_items: trained`` (items without a training interaction stay out of the training
softmaxes), on the tiny random backbone."""

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from test_cllm4rec import fresh_model

from recbole_cllm4rec.data.text import entity_texts
from recbole_cllm4rec.llm import text_start_ids


def _users(model, n=4):
    return model.corpus.users_with_history()[:n]


@pytest.fixture(scope="module")
def text_model(ml100k_tiny):
    """One model with item_text_rows on, its initial state kept in ``initial``; its ID rows and
    rec projection are then moved off their start (as training would), so each part is visible."""
    model = fresh_model(ml100k_tiny, item_text_rows=True)
    model.initial = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for table in (model.item_collab, model.item_rec):
            table.weight.copy_(0.05 * torch.randn(table.weight.shape, generator=generator))
        rec = model.text_projection["rec"].weight
        rec.add_(0.05 * torch.randn(rec.shape, generator=generator))
    return model


@pytest.fixture
def untrained_item(text_model):
    """An item of ml-100k with no interaction in the training split (but with a text)."""
    untrained = torch.nonzero(~text_model.trained_items).flatten().tolist()
    item = next(i for i in untrained if i)
    assert text_model.item_text_states[item].abs().sum() > 0
    return item


@pytest.fixture
def softmax(text_model):
    """Sets ``softmax_items`` on the shared model for one test, and puts it back."""
    saved = text_model.softmax_items

    def set_to(value):
        text_model.softmax_items = value
        text_model.zero_grad(set_to_none=True)

    yield set_to
    text_model.softmax_items = saved
    text_model.zero_grad(set_to_none=True)


def test_rows_start_as_text_map_with_zero_id_rows_and_rec_copies_collab(text_model):
    initial = text_model.initial
    assert torch.equal(initial["item_collab.weight"], torch.zeros_like(initial["item_collab.weight"]))
    assert torch.equal(initial["item_rec.weight"], initial["item_collab.weight"])
    assert torch.equal(initial["text_projection.rec.weight"], initial["text_projection.collab.weight"])
    assert initial["text_projection.collab.weight"].abs().sum() > 0
    assert "item_text_states" not in initial  # rebuilt from the item texts, not saved


def test_text_states_are_standardised_over_items_with_padding_row_zero(text_model):
    states = text_model.item_text_states
    assert states.shape == (text_model.n_items, text_model.backbone.config.hidden_size)
    assert torch.equal(states[0], torch.zeros_like(states[0]))
    text = states[1:]
    assert bool((text.abs().sum(1) > 0).all())  # every ml-100k item has a text
    assert torch.allclose(text.mean(0), torch.zeros(states.shape[1]), atol=1e-5)
    assert torch.allclose(text.std(0), torch.full((states.shape[1],), states.shape[1] ** -0.5), rtol=1e-3)
    assert text.norm(dim=1).mean().item() == pytest.approx(1.0, abs=0.05)


def test_text_states_equal_a_recomputation_from_the_item_texts_alone(ml100k_tiny, text_model):
    """Each item's state is the whole backbone's mean final state over its own text tokens
    (texts of one length read together, so no padding), standardised: item metadata only, no
    interactions."""
    config, _, (train, _, _), _ = ml100k_tiny
    model, tokenizer = text_model, text_model.corpus.tokenizer
    start = text_start_ids(tokenizer)
    by_length = {}
    for item, text in enumerate(entity_texts(train._dataset, "item", config["item_text"])):
        if item and text.strip():
            ids = tokenizer.encode(" " + text.strip(), add_special_tokens=False)[: config["max_text_tokens"]]
            by_length.setdefault(len(ids), []).append((item, start + ids))
    raw = torch.zeros_like(model.item_text_states)
    with torch.no_grad():
        for group in by_length.values():
            items, ids = zip(*group)
            out = model.backbone.base_model(input_ids=torch.tensor(ids)).last_hidden_state
            raw[list(items)] = out[:, len(start) :].mean(1)
    text = raw[1:]
    expected = (text - text.mean(0)) / text.std(0) / text.shape[1] ** 0.5
    assert torch.allclose(model.item_text_states[1:], expected, atol=1e-4)


def test_items_without_training_interactions_get_text_states(text_model, untrained_item):
    counts = np.bincount(np.concatenate(text_model.corpus.histories), minlength=text_model.n_items)
    assert torch.equal(text_model.trained_items, torch.from_numpy(counts > 0))
    assert not text_model.trained_items[untrained_item]
    assert text_model.item_text_states[untrained_item].norm() > 0.1


def test_item_text_rows_leave_the_training_histories_alone(ml100k_tiny, text_model):
    plain = ml100k_tiny[3].corpus.histories
    assert len(text_model.corpus.histories) == len(plain)
    assert all(np.array_equal(a, b) for a, b in zip(text_model.corpus.histories, plain))


def test_embed_reads_id_row_plus_projected_text_state_at_item_positions(text_model):
    model = text_model
    items = model.corpus.histories[1][:5]
    ids = torch.as_tensor(model.corpus.rec_prompt(1, items))[None]
    with torch.no_grad():
        for kind in ("collab", "rec"):
            embeds = model.embed(ids, kind)[0]
            _, table = model.tables(kind)
            for position in torch.nonzero(ids[0] >= model.corpus.item_offset).flatten():
                item = int(ids[0, position]) - model.corpus.item_offset
                row = table.weight[item] + model.text_projection[kind](model.item_text_states[item])
                assert torch.allclose(embeds[position], row * model.id_input_scale, atol=1e-6), (kind, item)
            assert torch.allclose(
                model.item_rows(kind), table.weight + model.text_projection[kind](model.item_text_states)
            )
        # the content LM has no projection: its rows are its table as is
        assert "content" not in model.text_projection and model.item_rows("content") is model.item_content.weight


def test_one_items_text_state_moves_only_that_items_positions_and_head_column(text_model):
    model = text_model
    items = model.corpus.histories[1][:5]
    item = int(items[2])
    ids = torch.as_tensor(model.corpus.rec_prompt(1, items))[None]
    states = torch.randn(3, model.backbone.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, logits_before = model.embed(ids, "rec")[0], model.item_logits(states, "rec")
        saved = model.item_text_states[item].clone()
        try:
            model.item_text_states[item] += 1.0
            after, logits_after = model.embed(ids, "rec")[0], model.item_logits(states, "rec")
        finally:
            model.item_text_states[item] = saved
    changed = (before != after).any(1)
    assert torch.equal(changed, ids[0] == model.corpus.item_offset + item)  # vocab, user, other items: same
    columns = (logits_before != logits_after).any(0)
    assert torch.equal(torch.nonzero(columns).flatten(), torch.tensor([item]))


def test_rec_loss_trains_the_rec_rows_and_projection_only(text_model):
    model = text_model
    model.zero_grad(set_to_none=True)
    model.rng = np.random.default_rng(0)
    model.rec_loss(model.recommendation_examples(_users(model)))[0].backward()

    def has_grad(p):
        return p.grad is not None and bool(p.grad.abs().sum() > 0)

    assert has_grad(model.text_projection["rec"].weight) and has_grad(model.item_rec.weight)
    assert not has_grad(model.text_projection["collab"].weight)
    for p in (model.item_collab.weight, model.user_content.weight, model.item_content.weight):
        assert not has_grad(p)
    assert all(p.grad is None for p in model.backbone.parameters())
    rec, collab = model.parameters_of("rec"), model.parameters_of("collab")
    assert any(p is model.text_projection["rec"].weight for p in rec)
    assert not any(p is model.text_projection["collab"].weight for p in rec)
    assert any(p is model.text_projection["collab"].weight for p in collab)
    model.zero_grad(set_to_none=True)


def test_text_mr_pulls_only_the_id_part_of_the_batch_items_rows(text_model, monkeypatch):
    """Without the content LM, MR's partner is the text map: row_j ~ N(W s_j, .), so the term is
    mr_weight * 20 / n_docs * sum of ||ID row||^2 over the documents' items (visible and target,
    with multiplicity), and its gradient reaches the rec ID rows only (not W, not the users)."""
    model = text_model
    monkeypatch.setattr(model, "use_content", False)
    assert model.item_mr_partner == "text" and model.mr_weight > 0
    model.zero_grad(set_to_none=True)
    model.rng = np.random.default_rng(0)
    examples = model.recommendation_examples(_users(model))
    _, mr = model.rec_loss(examples)
    items = np.concatenate([np.concatenate([v, t]) for _, v, t in examples])
    expected = (
        model.item_rec.weight.detach()[torch.as_tensor(items)].pow(2).sum() * 20 * model.mr_weight / len(examples)
    )
    assert mr.item() == pytest.approx(expected.item(), rel=1e-5) and mr.item() > 0
    mr.backward()
    touched = np.zeros(model.n_items, dtype=bool)
    touched[items] = True
    grad = model.item_rec.weight.grad
    assert grad[torch.as_tensor(touched)].abs().sum(1).gt(0).all()
    assert torch.equal(grad[torch.as_tensor(~touched)], torch.zeros_like(grad[torch.as_tensor(~touched)]))
    assert model.text_projection["rec"].weight.grad is None and model.user_rec.weight.grad is None
    model.zero_grad(set_to_none=True)


def _rec_loss(model):
    model.rng = np.random.default_rng(0)  # the same masks each call
    return model.rec_loss(model.recommendation_examples(_users(model, 8)))[0]


def _collab_loss(model):
    docs = [model.corpus.collaborative_document(u, np.random.default_rng(0), reorder=False) for u in _users(model)]
    return model.collaborative_loss(docs)[0]


@pytest.mark.parametrize("loss,kind", [(_rec_loss, "rec"), (_collab_loss, "collab")])
def test_trained_softmax_leaves_untrained_items_out_of_the_loss(text_model, untrained_item, softmax, loss, kind):
    """softmax_items: trained gives an untrained item's row exactly zero gradient and the loss
    no dependence on it; with softmax_items: all it is a negative, with a gradient."""
    model = text_model
    table = model.tables(kind)[1].weight
    softmax("trained")
    loss(model).backward()
    assert torch.equal(table.grad[untrained_item], torch.zeros_like(table.grad[untrained_item]))
    assert table.grad[model.trained_items].abs().sum() > 0  # the trained rows still learn
    with torch.no_grad():
        base = loss(model)
        saved = table[untrained_item].clone()
        try:
            table[untrained_item] += 10.0
            moved = loss(model)
        finally:
            table[untrained_item] = saved
    assert torch.isfinite(base) and torch.equal(base, moved)

    softmax("all")
    loss(model).backward()
    grad = table.grad[untrained_item].clone()
    assert grad.abs().sum() > 0
    with torch.no_grad():
        base = loss(model)
        try:  # up its gradient, far enough to matter in float32 (a rare item starts near p=1e-5)
            table[untrained_item] += 10.0 * grad / grad.norm()
            moved = loss(model)
        finally:
            table[untrained_item] = saved
    assert moved > base


def test_training_logits_mask_untrained_items_and_ranking_still_scores_them(text_model, untrained_item, softmax):
    model = text_model
    states = torch.randn(2, model.backbone.config.hidden_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model.item_logits(states, "rec")
        softmax("trained")
        masked = model.training_logits(logits)
        assert torch.isneginf(masked[:, untrained_item]).all() and torch.isneginf(masked[:, ~model.trained_items]).all()
        assert torch.equal(masked[:, model.trained_items], logits[:, model.trained_items])
        scores = model.full_sort_predict(Interaction({model.USER_ID: torch.as_tensor(_users(model, 3))}))
        assert torch.isfinite(scores[:, untrained_item]).all() and torch.isfinite(scores[:, 1:]).all()
        softmax("all")
        assert torch.equal(model.training_logits(logits), logits)


def test_item_text_rows_without_an_item_text_template_says_what_to_do(ml100k_tiny):
    with pytest.raises(ValueError, match="item_text_rows"):
        fresh_model(ml100k_tiny, item_text_rows=True, item_text=None)


def test_saved_state_reloads_to_the_same_scores(ml100k_tiny, text_model):
    """The checkpoint holds the projections, not the text states; a fresh model rebuilds the
    same states, so the reloaded model ranks exactly as the saved one."""
    batch = Interaction({text_model.USER_ID: torch.as_tensor(_users(text_model, 3))})
    text_model._ranking_rows = None
    saved_scores = text_model.full_sort_predict(batch)
    state = text_model.state_dict()
    assert {"text_projection.collab.weight", "text_projection.rec.weight"} <= set(state)
    fresh = fresh_model(ml100k_tiny, item_text_rows=True)
    assert not torch.allclose(fresh.full_sort_predict(batch)[:, 1:], saved_scores[:, 1:])
    fresh.load_state_dict(state)
    assert torch.equal(fresh.item_text_states, text_model.item_text_states)
    assert torch.allclose(fresh.full_sort_predict(batch)[:, 1:], saved_scores[:, 1:], atol=1e-6)


@pytest.mark.parametrize("cold_rows", ["content", "content_map", "text_map"])
def test_cold_item_ranking_rows_keep_the_warm_items_text_part(text_model, cold_rows):
    """cold_item_rows replaces the cold items' rows only: the warm items score as with
    cold_item_rows: trained, whose rows include the text projection."""
    model = text_model
    batch = Interaction({model.USER_ID: torch.as_tensor(_users(model, 3))})
    saved = model.cold_item_rows
    try:
        model.cold_item_rows, model._ranking_rows = "trained", None
        trained = model.full_sort_predict(batch)
        model.cold_item_rows, model._ranking_rows, model.text_prior_count = cold_rows, None, 0.0
        replaced = model.full_sort_predict(batch)
    finally:
        model.cold_item_rows, model._ranking_rows, model.text_prior_count = saved, None, 10.0
    warm = model.trained_items.clone()
    warm[0] = False
    assert torch.allclose(replaced[:, warm], trained[:, warm], atol=1e-5)


def test_text_map_ranks_cold_items_by_a_map_of_their_text_state_fitted_on_warm_items(ml100k_tiny):
    """cold_item_rows: text_map, on a model without text rows: each cold item's (rec row, bias) is
    the ridge map of its text state fitted on the warm items' (state -> row, bias), so a cold
    item's score moves with its own text state only; warm items keep their trained rows."""
    from recbole_cllm4rec.model.cold_items import fit_map, ranking_rows

    model = fresh_model(ml100k_tiny, cold_item_rows="text_map", item_text_rows=False, text_prior_count=0)
    assert not model.text_projection and model.item_text_states.shape[0] == model.n_items
    warm = model.trained_items.clone()
    cold = ~warm
    cold[0] = False
    rows, bias = ranking_rows(model)
    assert torch.equal(rows[warm], model.item_rec.weight[warm]) and torch.equal(
        bias[warm], model.item_bias["rec"][warm]
    )
    target = torch.cat([model.item_rec.weight[warm], model.item_bias["rec"][warm, None]], 1).detach()
    (weights, intercept), _ = fit_map(model.item_text_states[warm], target, model.seed)
    expected = (model.item_text_states[cold].double() @ weights + intercept).float()
    assert torch.allclose(rows[cold], expected[:, :-1], atol=1e-5) and torch.allclose(
        bias[cold], expected[:, -1], atol=1e-5
    )

    batch = Interaction({model.USER_ID: torch.as_tensor(_users(model, 3))})
    before = model.full_sort_predict(batch)
    item = int(torch.nonzero(cold).flatten()[0])
    model.item_text_states[item] += 1.0
    model._ranking_rows = None
    after = model.full_sort_predict(batch)
    changed = (after - before).abs().amax(0) > 1e-6
    assert changed[item] and int(changed.sum()) == 1


def test_text_prior_count_leans_each_item_on_its_text_map_by_its_training_count(ml100k_tiny):
    """text_prior_count: k: every item ranks with (n row + k map) / (n + k), n its training
    interactions, the map fitted on the warm items as text_map fits it; an unseen item takes
    the map, a popular one stays near its trained row; the padding row is untouched."""
    from recbole_cllm4rec.model.cold_items import fit_map, ranking_rows

    k = 10.0
    model = fresh_model(ml100k_tiny, cold_item_rows="text_map", item_text_rows=False, text_prior_count=k)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # rows off their start, as training would leave them
        model.item_rec.weight.copy_(0.05 * torch.randn(model.item_rec.weight.shape, generator=generator))
    warm = model.trained_items.clone()
    rows, bias = ranking_rows(model)
    trained_rows, trained_bias = model.item_rec.weight.detach(), model.item_bias["rec"].detach()
    target = torch.cat([trained_rows[warm], trained_bias[warm, None]], 1)
    (weights, intercept), _ = fit_map(model.item_text_states[warm], target, model.seed)
    mapped = (model.item_text_states.double() @ weights + intercept).float()
    n = torch.as_tensor(model._item_counts(), dtype=torch.float32)
    keep = n / (n + k)
    expected_rows = keep[:, None] * trained_rows + (1 - keep[:, None]) * mapped[:, :-1]
    expected_bias = keep * trained_bias + (1 - keep) * mapped[:, -1]
    assert torch.allclose(rows[1:], expected_rows[1:], atol=1e-5)
    assert torch.allclose(bias[1:], expected_bias[1:], atol=1e-5)
    assert torch.equal(rows[0], trained_rows[0])
    rare, popular = int(torch.nonzero(n == 1).flatten()[0]), int(n.argmax())
    assert (rows[rare] - mapped[rare, :-1]).norm() < (rows[rare] - trained_rows[rare]).norm()
    assert (rows[popular] - trained_rows[popular]).norm() < 0.1 * (rows[popular] - mapped[popular, :-1]).norm()
    assert not torch.allclose(rows[warm], trained_rows[warm])  # unlike text_map alone, warm rows move


def test_cold_item_rows_trained_ranks_with_the_trained_rows_whatever_the_text_prior(ml100k_tiny):
    from recbole_cllm4rec.model.cold_items import ranking_rows

    model = fresh_model(ml100k_tiny, cold_item_rows="trained", text_prior_count=10)
    assert ranking_rows(model) is None and not len(model.item_text_states)  # no text read at all


def test_cold_user_states_text_map_mixes_each_read_out_with_the_users_text_map(ml100k_tiny):
    """cold_user_states: text_map: a user's read-out when ranking is (n state + k map) / (n + k),
    n the training-history length, the map a ridge fit from the user text state (user_text) to
    one-order read-outs of the users with a history; a user without one takes the map instead of
    the zero read-out (bias alone); each user's scores move with their own text state only."""
    from recbole_cllm4rec.model.cold_items import fit_map, fit_user_map, user_ranking_states

    k = 5.0
    model = fresh_model(ml100k_tiny, cold_user_states="text_map", user_text_prior_count=k, cold_item_rows="trained")
    assert model.user_text_states.shape[0] == model.n_users and model.user_text_states[1:].abs().sum() > 0
    users = _users(model, 4)
    user_map = fit_user_map(model)
    warm = model.corpus.users_with_history()
    (weights, intercept), _ = fit_map(model.user_text_states[warm], model.ranking_states(warm, 1), model.seed)
    assert torch.allclose(user_map[0], weights) and torch.allclose(user_map[1], intercept)

    states = model.ranking_states(users, model.eval_prompt_draws)
    mapped = (model.user_text_states[users].double() @ weights + intercept).float()
    n = torch.as_tensor([len(model.corpus.histories[u]) for u in users], dtype=torch.float32)
    expected = (n[:, None] * states + k * mapped) / (n[:, None] + k)
    assert torch.allclose(user_ranking_states(model, users, states, user_map), expected, atol=1e-5)
    batch = Interaction({model.USER_ID: torch.as_tensor(users)})
    scores = model.full_sort_predict(batch)
    assert torch.allclose(scores[:, 1:], model.item_logits(expected, "rec")[:, 1:], atol=1e-4)

    model.user_text_states[users[0]] += 1.0
    model._user_map = None
    moved = (model.full_sort_predict(batch) - scores)[:, 1:].abs().amax(1) > 1e-5
    assert moved[0] and not moved[1:].any()

    model.user_text_prior_count = 0.0  # only a user with no training interaction takes the map
    cold_user = users[1]
    model.corpus.histories[cold_user] = model.corpus.histories[cold_user][:0]
    model._user_map = None
    cold_scores = model.full_sort_predict(Interaction({model.USER_ID: torch.as_tensor([cold_user])}))
    bias_only = model.item_bias["rec"][1:]
    assert not torch.allclose(cold_scores[0, 1:], bias_only, atol=1e-3)


def test_text_map_without_an_item_text_template_says_what_to_do(ml100k_tiny):
    with pytest.raises(ValueError, match="cold_item_rows other than text_map"):
        fresh_model(ml100k_tiny, cold_item_rows="text_map", item_text_rows=False, item_text=None)
