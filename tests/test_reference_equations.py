"""CLLM4Rec's losses and scores against the paper's equations, recomputed here in plain torch.

Each reference below builds its own input embeddings (vocabulary rows of the backbone for
vocabulary ids, table rows for ``user_u`` / ``item_j`` words), runs the tiny random backbone
itself, one document at a time and without padding, and applies the equation to its states or
logits; none of the package's loss or read-out code runs on the reference side. The model
under test uses the paper's settings wherever a switch exists (``PAPER``), in fp32, with one
change: its tables start at std 0.5, not the paper's 0.02, at which every item softmax is nearly
uniform and a wrong target or read-out would move a loss by less than the tolerance.
"""

import dataclasses
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from recbole.data.interaction import Interaction
from test_cllm4rec import fresh_model

from conftest import ROOT

PAPER = {
    "autocast": "fp32",
    "readout": "last",
    "readout_layers": 0,
    "id_input_scale": 1.0,
    "scaled_item_logits": False,
    "item_bias": False,
    "item_text_rows": False,
    "lora_rank": 0,
    "softmax_items": "all",
    "cold_item_rows": "trained",
    "predict_first_main_token": True,
    "finetune_target": "masked",
    "mask_ratio": 0.2,
    "mr_on_targets": True,
    "mr_weight": 1.0,
    "use_content": True,
    "eval_prompt_draws": 1,
    "max_doc_items": 10_000,
    "eval_max_doc_items": 10_000,
    "max_text_tokens": 10_000,
    "id_init_std": 0.5,
    "prompt_start_token": False,
}
AUTHORS_MR_BATCH = 20
ID_WORD = re.compile(r"(user_\d+|item_\d+)")
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def build(ml100k_tiny):
    """CLLM4Rec with the paper's settings plus ``flip``, built once per flip for this module."""
    built = {}

    def model(**flip):
        key = tuple(sorted(flip.items()))
        if key not in built:
            built[key] = fresh_model(ml100k_tiny, **{**PAPER, **flip})
        return built[key]

    return model


def short_history_users(model, count, longest=40):
    histories = model.corpus.histories
    return np.asarray([u for u in range(1, len(histories)) if 0 < len(histories[u]) <= longest][:count])


# ---- the reference side: the paper's tokens, embeddings and equations --------------------------
def offsets(model):
    """(N, N + I): ``user_u`` is token N + u and ``item_j`` is token N + I + j."""
    vocab = len(model.corpus.tokenizer)
    return vocab, vocab + model.n_users


def start_token(model):
    return model.corpus.tokenizer.convert_tokens_to_ids("<|endoftext|>")


def paper_ids(model, text):
    """Token ids of a paper template: ID words atomic, other pieces right-stripped and BPE-encoded
    with their leading space, whitespace-only pieces dropped."""
    user_offset, item_offset = offsets(model)
    ids = []
    for piece in ID_WORD.split(text):
        if ID_WORD.fullmatch(piece):
            kind, number = piece.split("_")
            ids.append((user_offset if kind == "user" else item_offset) + int(number))
        elif piece.strip():
            ids.extend(model.corpus.tokenizer.encode(piece.rstrip(), add_special_tokens=False))
    return ids


def item_words(items):
    return " ".join(f"item_{int(j)}" for j in items)


def rec_prompt_ids(model, user, visible):
    text = f"user_{user} has interacted with {item_words(visible)}, user_{user} will interact with"
    return paper_ids(model, text)


def tables(model, kind):
    users, items = {
        "collab": (model.user_collab, model.item_collab),
        "content": (model.user_content, model.item_content),
        "rec": (model.user_rec, model.item_rec),
    }[kind]
    return users.weight.detach(), items.weight.detach()


def input_embeddings(model, tokens, kind, id_scale=1.0):
    user_offset, item_offset = offsets(model)
    users, items = tables(model, kind)
    vocab = model.backbone.get_input_embeddings().weight
    rows = []
    for t in map(int, tokens):
        if t < user_offset:
            rows.append(vocab[t])
        elif t < item_offset:
            rows.append(users[t - user_offset] * id_scale)
        else:
            rows.append(items[t - item_offset] * id_scale)
    return torch.stack(rows)[None]


def final_states(model, tokens, kind, id_scale=1.0):
    """[L, H]: the full-depth backbone's final (normed) states over one unpadded document."""
    embeds = input_embeddings(model, tokens, kind, id_scale)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    return model.backbone.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state[0]


@torch.no_grad()
def reference_collaborative_lm(model, docs):
    _, item_offset = offsets(model)
    _, items = tables(model, "collab")
    nll, count = torch.zeros(()), 0
    for d in docs:
        states = final_states(model, np.concatenate([d.prompt, d.main]), "collab")
        before = states[len(d.prompt) - 1 : len(d.prompt) - 1 + len(d.main)]
        logits = before @ items[1:].t()
        nll += F.cross_entropy(logits, torch.as_tensor(d.main - item_offset - 1), reduction="sum")
        count += len(d.main)
    return nll / count


@torch.no_grad()
def reference_content_lm(model, docs):
    nll, count = torch.zeros(()), 0
    for d in docs:
        embeds = input_embeddings(model, np.concatenate([d.prompt, d.main]), "content")
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        logits = model.backbone(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[0]
        before = logits[len(d.prompt) - 1 : len(d.prompt) - 1 + len(d.main)]
        nll += F.cross_entropy(before, torch.as_tensor(d.main), reduction="sum")
        count += len(d.main)
    return nll / count


def mr_distance(model, kind, partner, token_lists):
    """Sum over every ID token of every document of ||e_kind - e_partner||^2 (vocabulary rows
    are shared, so their terms are 0)."""
    user_offset, item_offset = offsets(model)
    own_users, own_items = tables(model, kind)
    other_users, other_items = tables(model, partner)
    total = torch.zeros((), dtype=torch.float64)
    for tokens in token_lists:
        for t in map(int, tokens):
            if user_offset <= t < item_offset:
                total += (own_users[t - user_offset] - other_users[t - user_offset]).double().pow(2).sum()
            elif t >= item_offset:
                total += (own_items[t - item_offset] - other_items[t - item_offset]).double().pow(2).sum()
    return total


@torch.no_grad()
def reference_rec_likelihood(model, examples):
    """-(1/B) sum_b sum_{j in targets_b} log softmax_j(h_b . V^r_j) over items 1..J."""
    _, items = tables(model, "rec")
    total = torch.zeros(())
    for user, visible, targets in examples:
        state = final_states(model, rec_prompt_ids(model, user, visible), "rec")[-1]
        log_probs = torch.log_softmax(state @ items[1:].t(), 0)
        total -= log_probs[torch.as_tensor(np.asarray(targets) - 1)].sum()
    return total / len(examples)


@torch.no_grad()
def reference_scores(model, users, histories, id_scale=1.0):
    _, items = tables(model, "rec")
    states = [final_states(model, rec_prompt_ids(model, u, h), "rec", id_scale)[-1] for u, h in zip(users, histories)]
    return torch.stack(states) @ items[1:].t()


def held_out(model, examples):
    """The paper's finetuning targets: each user's training items not shown in the prompt."""
    return [(u, shown, np.setdiff1d(model.corpus.histories[u], shown)) for u, shown, _ in examples]


# ---- documents --------------------------------------------------------------------------------
def test_document_token_ids_follow_the_paper_templates(build, ml100k_tiny):
    """Prompts of the paper, token by token: collaborative ``user_i has interacted with`` |
    ``item_a item_b ...``; recommendation ``user_i has interacted with <items>, user_i will
    interact with``; content ``item_j is titled:`` | title, ``user_i is a`` | profile, and
    ``user_i wrote the following review for item_j:`` | review. ``user_i`` is token N + i and
    ``item_j`` token N + I + j. No start token (paper and code have none); the default's
    ``prompt_start_token: True`` puts ``<|endoftext|>`` before each prompt and nothing else."""
    model = build()
    corpus, dataset = model.corpus, model.corpus.dataset
    vocab = len(corpus.tokenizer)
    assert (corpus.user_offset, corpus.item_offset) == (vocab, vocab + model.n_users)

    user = int(short_history_users(model, 1)[0])
    history = corpus.histories[user]
    doc = corpus.collaborative_document(user, np.random.default_rng(0), reorder=False)
    assert doc.prompt.tolist() == paper_ids(model, f"user_{user} has interacted with")
    assert doc.main.tolist() == paper_ids(model, item_words(np.sort(history)))
    reordered = corpus.collaborative_document(user, np.random.default_rng(0), reorder=True)
    assert sorted(reordered.main.tolist()) == doc.main.tolist() and reordered.main.tolist() != doc.main.tolist()

    visible = history[::-1][:5]
    assert corpus.rec_prompt(user, visible).tolist() == rec_prompt_ids(model, user, visible)

    def encoded(text):
        return corpus.tokenizer.encode(text, add_special_tokens=False)

    docs = corpus.content_documents(ml100k_tiny[0]["content_documents"])
    toy_story = dataset.token2id(dataset.iid_field, "1")
    item_doc = next(d for d in docs if d.item == toy_story)
    assert item_doc.prompt.tolist() == paper_ids(model, f"item_{toy_story} is titled:")
    assert item_doc.main.tolist() == encoded(" Toy Story (1995). Genres: Animation Children's Comedy.")
    first_user = dataset.token2id(dataset.uid_field, "1")
    user_doc = next(d for d in docs if d.user == first_user)
    assert user_doc.prompt.tolist() == paper_ids(model, f"user_{first_user} is a")
    assert user_doc.main.tolist() == encoded(" 24 year old M working as technician.")

    with open(os.path.join(ROOT, "recbole_cllm4rec", "properties", "dataset", "amazon-beauty.yaml")) as f:
        review_spec = [s for s in yaml.safe_load(f)["content_documents"] if s["source"] == "review"]
    item = int(history[0])
    review = (
        dataset.id2token(dataset.uid_field, user),
        dataset.id2token(dataset.iid_field, item),
        "A warm, funny film.",
    )
    (review_doc,) = corpus.content_documents(review_spec, [review])
    assert (review_doc.user, review_doc.item) == (user, item)
    assert review_doc.prompt.tolist() == paper_ids(model, f"user_{user} wrote the following review for item_{item}:")
    assert review_doc.main.tolist() == encoded(" A warm, funny film.")

    started = build(prompt_start_token=True).corpus
    eot = start_token(model)
    assert started.collaborative_document(user, np.random.default_rng(0), reorder=False).prompt.tolist() == (
        [eot] + doc.prompt.tolist()
    )
    assert started.rec_prompt(user, visible).tolist() == [eot] + rec_prompt_ids(model, user, visible)
    assert started.content_documents(review_spec, [review])[0].prompt.tolist() == [eot] + review_doc.prompt.tolist()


# ---- pretraining losses -------------------------------------------------------------------------
def test_collaborative_lm_loss(build):
    """Collaborative LM loss L_LM^l = -(1/T) sum_u sum_k log softmax_j(h_{u,k-1} . V^l_j)[item_{u,k}]:
    a softmax over items only, the head tied to the collaborative item table, every main-text
    item a target (the prompt's last state predicts the first), averaged over the batch's T
    targets."""
    model = build()
    rng = np.random.default_rng(0)
    docs = [model.corpus.collaborative_document(u, rng) for u in short_history_users(model, 4)]
    lm, _ = model.collaborative_loss(docs)
    torch.testing.assert_close(lm.detach(), reference_collaborative_lm(model, docs), **CLOSE)


def test_content_lm_loss(build, ml100k_tiny):
    """Content LM loss L_LM^c = -(1/T) sum_d sum_k log softmax_w(logits of the frozen LM)[w_{d,k}]
    over the main text's tokens, the prompt read through the content tables, averaged over the
    batch's T tokens; here item and user documents together."""
    model = build()
    docs = model.corpus.content_documents(ml100k_tiny[0]["content_documents"])
    docs = [d for d in docs if d.item][:3] + [d for d in docs if d.user][:3]
    lm, _ = model.content_loss(docs, "collab")
    torch.testing.assert_close(lm.detach(), reference_content_lm(model, docs), **CLOSE)


@pytest.mark.parametrize(
    "n_docs,weight,scale", [(AUTHORS_MR_BATCH, 1.0, 1.0), (AUTHORS_MR_BATCH, 0.25, 1.0), (7, 1.0, 20 / 7)]
)
def test_mutual_regularization_scale_in_the_collaborative_step(build, monkeypatch, n_docs, weight, scale):
    """Mutual regularisation of the L-step, MR_l = lambda_V sum_u (||U^l_u - U^c_u||^2 +
    sum_{j in doc_u} ||V^l_j - V^c_j||^2), in the authors' units: their sum runs over a batch of
    20 documents (no 1/2), so 20 documents give lambda_V x the plain sum and n documents
    lambda_V x 20/n x the sum."""
    model = build()
    monkeypatch.setattr(model, "mr_weight", weight)
    rng = np.random.default_rng(1)
    docs = [model.corpus.collaborative_document(u, rng) for u in short_history_users(model, n_docs)]
    _, mr = model.collaborative_loss(docs)
    plain_sum = mr_distance(model, "collab", "content", [np.concatenate([d.prompt, d.main]) for d in docs])
    assert plain_sum > 0
    torch.testing.assert_close(mr.detach().double(), weight * scale * plain_sum, rtol=1e-5, atol=0.0)


def test_mutual_regularization_in_the_content_and_recommendation_steps(build, ml100k_tiny):
    """C-step, MR_c = lambda_V sum_d (||U^c_{u_d} - U^l_{u_d}||^2 + ||V^c_{j_d} - V^l_{j_d}||^2)
    over the ID words of each content document; finetuning, lambda_V sum_b (sum over the
    prompt's ID words of ||e^r - e^c||^2 + sum_{j in targets_b} ||V^r_j - V^c_j||^2), the user
    word counted at both of its places in the prompt. Both in the authors' per-20-documents units."""
    model = build()
    docs = model.corpus.content_documents(ml100k_tiny[0]["content_documents"])
    docs = [d for d in docs if d.item][:4] + [d for d in docs if d.user][:3]
    _, mr = model.content_loss(docs, "collab")
    plain_sum = mr_distance(model, "content", "collab", [d.prompt for d in docs])
    torch.testing.assert_close(mr.detach().double(), AUTHORS_MR_BATCH / len(docs) * plain_sum, rtol=1e-5, atol=0.0)

    model.rng = np.random.default_rng(2)
    examples = model.recommendation_examples(short_history_users(model, 5))
    _, mr = model.rec_loss(examples)
    token_lists = [rec_prompt_ids(model, u, shown) + paper_ids(model, item_words(t)) for u, shown, t in examples]
    plain_sum = mr_distance(model, "rec", "content", token_lists)
    torch.testing.assert_close(mr.detach().double(), AUTHORS_MR_BATCH / len(examples) * plain_sum, rtol=1e-5, atol=0.0)


# ---- finetuning and ranking ---------------------------------------------------------------------
@pytest.mark.parametrize("target", ["masked", "all"])
def test_finetuning_multinomial_likelihood(build, target):
    """Finetuning loss L_rec = -(1/B) sum_b sum_j y_bj log softmax_j(h_b . V^r_j), h_b the last
    state of ``user_i has interacted with <visible items>, user_i will interact with``, over a
    mask of m = max(1, floor(0.2 n)) of the user's n items; y is the multi-hot of the masked
    items (paper, ``masked``) or of every training item (authors' code, ``all``)."""
    model = build(finetune_target=target)
    model.rng = np.random.default_rng(3)
    examples = model.recommendation_examples(short_history_users(model, 5))
    for user, shown, targets in examples:
        history = model.corpus.histories[user]
        hidden = np.setdiff1d(history, shown)
        assert len(hidden) == max(1, int(0.2 * len(history))) and len(shown) + len(hidden) == len(history)
        assert sorted(targets) == sorted(hidden if target == "masked" else history)
    rec, _ = model.rec_loss(examples)
    expected = held_out(model, examples) if target == "masked" else examples
    torch.testing.assert_close(rec.detach(), reference_rec_likelihood(model, expected), **CLOSE)


def test_ranking_scores(build):
    """Ranking scores s_uj = h_u . V^r_j, h_u the last state of the prompt over the user's whole
    training history in one random order; the paper ranks by softmax_j(s_u), which orders items
    as s_u does. RecBole's padding item 0 never ranks."""
    model = build()
    users = short_history_users(model, 4)
    scores = model.full_sort_predict(Interaction({model.USER_ID: torch.as_tensor(users)}))
    histories = [model.corpus.eval_history(u, model.seed) for u in users]
    for user, history in zip(users, histories):
        assert sorted(history.tolist()) == sorted(model.corpus.histories[user].tolist())
    assert torch.isinf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], reference_scores(model, users, histories), **CLOSE)


# ---- the references tell the paper's settings from the others ------------------------------------
def collaborative_pair(model):
    """Documents of three items each, so the first item is a third of the targets."""
    rng = np.random.default_rng(4)
    docs = [model.corpus.collaborative_document(u, rng) for u in short_history_users(model, 3)]
    docs = [dataclasses.replace(d, main=d.main[:3]) for d in docs]
    return model.collaborative_loss(docs)[0].detach(), reference_collaborative_lm(model, docs)


def scores_pair(model, id_scale=1.0):
    users = short_history_users(model, 3)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({model.USER_ID: torch.as_tensor(users)}))
    histories = [model.corpus.eval_history(u, model.seed) for u in users]
    return scores[:, 1:], reference_scores(model, users, histories, id_scale)


def finetuning_pair(model):
    model.rng = np.random.default_rng(5)
    examples = model.recommendation_examples(short_history_users(model, 4))
    return model.rec_loss(examples)[0].detach(), reference_rec_likelihood(model, held_out(model, examples))


@pytest.mark.parametrize(
    "flip,pair",
    [
        ({"predict_first_main_token": False}, collaborative_pair),
        ({"readout": "mean"}, scores_pair),
        ({"scaled_item_logits": True}, scores_pair),
        ({"readout_layers": 1}, scores_pair),
        ({"id_input_scale": 16.0}, scores_pair),
        ({"finetune_target": "all"}, finetuning_pair),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_the_paper_reference_rejects_a_flipped_switch(build, flip, pair):
    """The references above are the paper's equations: with the paper's settings the package
    matches them, and with one switch flipped to its other value it no longer does, so a
    wrong switch in the paper preset would fail these tests."""
    package, reference = pair(build())
    torch.testing.assert_close(package, reference, **CLOSE)
    package, reference = pair(build(**flip))
    assert not torch.allclose(package, reference, rtol=1e-3, atol=1e-4), flip


def test_id_input_scale_multiplies_the_id_rows_on_input(build):
    """The documented departure ``id_input_scale`` (paper: 1) is exactly a factor on the ID
    words' input rows: the ranking scores equal the paper's with the rows scaled so."""
    package, reference = scores_pair(build(id_input_scale=16.0), id_scale=16.0)
    torch.testing.assert_close(package, reference, **CLOSE)
