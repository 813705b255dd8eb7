"""CLLM4Rec's three corpora, pre-tokenised once from a RecBole Dataset's training split.

Token ids live in one joint space: ``[0, V)`` is the backbone's vocabulary, ``V + u`` is the
atomic word ``user_u`` and ``V + n_users + j`` is ``item_j`` (u, j are RecBole internal ids, so
item token k is RecBole item k; id 0 is RecBole's padding and never appears). ID words are
never passed through BPE, so they cannot split.

* collaborative: ``user_u has interacted with`` | ``item_a item_b ...`` (one per user)
* content: a prompt with ID words | text, from the dataset's ``content_documents`` templates
  (item fields, user fields, reviews of training pairs)
* recommendation: ``user_u has interacted with <visible items>, user_u will interact with``
"""

import re
from dataclasses import dataclass
from logging import getLogger

import numpy as np

from recbole_cllm4rec.data.reviews import read_reviews
from recbole_cllm4rec.data.text import entity_texts, template_fields
from recbole_cllm4rec.llm.backbone import text_start_ids

ID_WORD = re.compile(r"(user_\d+|item_\d+)")
ID_PLACEHOLDER = re.compile(r"(\{user\}|\{item\})")


class CorpusError(ValueError):
    pass


@dataclass
class Document:
    """A prompt (soft ID words + hard words) and the main text the LM learns, as joint ids."""

    prompt: np.ndarray
    main: np.ndarray
    user: int = 0  # the document's user and item, for mutual regularisation
    item: int = 0


def training_histories(dataset):
    """Per-user arrays of training item ids (ascending), from the training split only."""
    users = dataset.inter_feat[dataset.uid_field].numpy()
    items = dataset.inter_feat[dataset.iid_field].numpy()
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(dataset.user_num + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(dataset.user_num)]


class CorpusBuilder:
    """Builds documents from a RecBole training Dataset and a tokenizer; never sees the model."""

    def __init__(self, dataset, tokenizer, config):
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.user_offset = self.vocab_size
        self.item_offset = self.vocab_size + dataset.user_num
        self.histories = training_histories(dataset)
        self.max_doc_items = config["max_doc_items"]
        self.eval_max_doc_items = config["eval_max_doc_items"]
        self.max_text_tokens = config["max_text_tokens"]
        self.reorder_items = config["reorder_items"]
        self.content_specs = config["content_documents"]
        self.data_path = config["data_path"]
        self._content_corpus = None
        start = np.asarray(text_start_ids(tokenizer), dtype=np.int64)
        self.pad_id = int(start[0]) if len(start) else 0  # padding is masked: any id will do
        self.start = start if config["prompt_start_token"] else start[:0]
        self._has_interacted = self._bpe(" has interacted with")
        self._will_interact = np.concatenate([self._bpe(","), [-1], self._bpe(" will interact with")])

    # ---- tokenisation -------------------------------------------------------------------
    def _bpe(self, text):
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)

    def user_token(self, user):
        return self.user_offset + int(user)

    def item_tokens(self, items):
        return self.item_offset + np.asarray(items, dtype=np.int64)

    def encode(self, text):
        """Joint ids of a text with ``user_<id>`` / ``item_<id>`` words kept atomic.

        Text pieces are right-stripped and keep their leading space, as the authors' tokenizer
        did; whitespace-only pieces between ID words are dropped.
        """
        ids = []
        for piece in ID_WORD.split(text):
            if ID_WORD.fullmatch(piece):
                kind, number = piece.split("_")
                ids.append((self.user_offset if kind == "user" else self.item_offset) + int(number))
            elif piece.strip():
                ids.extend(self._bpe(piece.rstrip()))
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids):
        words = []
        for i in np.asarray(ids).tolist():
            if i >= self.item_offset:
                words.append(f" item_{i - self.item_offset}")
            elif i >= self.user_offset:
                words.append(f" user_{i - self.user_offset}")
            else:
                words.append(self.tokenizer.decode([i]))
        return "".join(words).strip()

    # ---- collaborative and recommendation documents -----------------------------------
    def users_with_history(self):
        return np.asarray([u for u in range(1, len(self.histories)) if len(self.histories[u])])

    def collaborative_prompt(self, user):
        return np.concatenate([self.start, [self.user_token(user)], self._has_interacted])

    def collaborative_document(self, user, rng, reorder=True):
        """``user_u has interacted with`` | the user's training items, at most max_doc_items
        of them (a uniform sample when longer), in a fresh random order when ``reorder``."""
        items = self.histories[user]
        if len(items) > self.max_doc_items:
            items = np.sort(rng.choice(items, self.max_doc_items, replace=False))
        if reorder:
            items = rng.permutation(items)
        return Document(self.collaborative_prompt(user), self.item_tokens(items), user=user)

    def collaborative_corpus(self, rng):
        """One collaborative document per user with a history, items freshly drawn from ``rng``."""
        return [self.collaborative_document(u, rng, self.reorder_items) for u in self.users_with_history()]

    def rec_prompt(self, user, visible_items):
        """``user_u has interacted with <items>, user_u will interact with``."""
        suffix = self._will_interact.copy()
        suffix[suffix == -1] = self.user_token(user)
        return np.concatenate([self.collaborative_prompt(user), self.item_tokens(visible_items), suffix])

    def split_history(self, user, rng, mask_ratio):
        """Mask m = max(1, floor(ratio * n)) items at random; the rest stay visible in random
        order (capped at max_doc_items). Returns (visible, masked)."""
        items = rng.permutation(self.histories[user])
        n_masked = max(1, int(np.floor(mask_ratio * len(items)))) if len(items) else 0
        return items[n_masked:][: self.max_doc_items], items[:n_masked]

    def eval_history(self, user, seed, draw=0):
        """The whole training history in an order fixed by (seed, user, draw): evaluation is
        deterministic, unlike the authors' unseeded shuffle."""
        rng = np.random.default_rng((seed, int(user)) + ((draw,) if draw else ()))
        items = self.histories[user]
        if len(items) > self.eval_max_doc_items:
            items = rng.choice(items, self.eval_max_doc_items, replace=False)
        return rng.permutation(items)

    # ---- content documents ------------------------------------------------------------
    def _prompt_from_template(self, template, user=0, item=0):
        ids = [self.start]
        for piece in ID_PLACEHOLDER.split(template):
            if piece == "{user}":
                ids.append([self.user_token(user)])
            elif piece == "{item}":
                ids.append(self.item_tokens([item]))
            elif piece.strip():
                ids.append(self._bpe(piece.rstrip()))
        return np.concatenate(ids).astype(np.int64)

    def _text_ids(self, text):
        return self._bpe(" " + text.strip())[: self.max_text_tokens]

    def content_corpus(self):
        """The documents of the dataset's ``content_documents``, built on first use (reviews read
        from the dataset's side file when a spec asks for them)."""
        if self._content_corpus is None:
            name = self.dataset.dataset_name
            if not self.content_specs:
                raise CorpusError(
                    f"dataset '{name}' defines no content_documents (item/user fields or reviews) for the "
                    f"content LM: add them to its yaml, or run collaborative-only with use_content: False"
                )
            wants_reviews = any(s.get("source") == "review" for s in self.content_specs)
            reviews = read_reviews(self.data_path, name) if wants_reviews else None
            self._content_corpus = self.content_documents(self.content_specs, reviews)
            if not self._content_corpus:
                raise CorpusError(
                    f"the content_documents templates of dataset '{name}' rendered no text (all fields "
                    f"empty?); fix the templates or set use_content: False"
                )
            getLogger().info(f"content corpus: {len(self._content_corpus)} documents")
        return self._content_corpus

    def content_documents(self, specs, reviews=None):
        """Documents for every entry of the dataset's ``content_documents``; reviews are kept
        only for (user, item) pairs of the training split."""
        docs = []
        for spec in specs or []:
            source, prompt, text = spec.get("source"), spec.get("prompt", ""), spec.get("text", "")
            if source in ("item", "user"):
                if "{" + source + "}" not in prompt:
                    raise CorpusError(f"content prompt '{prompt}' for source '{source}' must contain {{{source}}}")
                texts = entity_texts(self.dataset, source, text)
                for entity, body in enumerate(texts):
                    if body.strip():
                        ids = {source: entity}
                        docs.append(Document(self._prompt_from_template(prompt, **ids), self._text_ids(body), **ids))
            elif source == "review":
                docs.extend(self._review_documents(prompt, text, reviews))
            else:
                raise CorpusError(f"content_documents source '{source}' is not one of review, item, user")
        return [d for d in docs if len(d.main)]

    def _review_documents(self, prompt, text, reviews):
        if reviews is None:
            raise CorpusError(
                f"content_documents asks for reviews but dataset '{self.dataset.dataset_name}' has no "
                f"review side file (<dataset>.review); convert the raw dump with "
                f"`python -m recbole_cllm4rec.data.convert`, or drop the review entry"
            )
        extra = [f for f in template_fields(text) if f != "review"]
        if extra:
            raise CorpusError(f"review text template '{text}' may only use {{review}}, not {extra}")
        training_pairs = {(u, int(i)) for u, items in enumerate(self.histories) for i in items}
        uid, iid = self.dataset.uid_field, self.dataset.iid_field
        docs = []
        for user_token, item_token, review in reviews:
            user = self.dataset.field2token_id[uid].get(user_token)
            item = self.dataset.field2token_id[iid].get(item_token)
            if user is None or item is None or (user, item) not in training_pairs:
                continue  # a validation/test pair, or filtered out: never in any corpus
            body = text.format(review=review)
            docs.append(
                Document(
                    self._prompt_from_template(prompt, user=user, item=item), self._text_ids(body), user=user, item=item
                )
            )
        return docs
