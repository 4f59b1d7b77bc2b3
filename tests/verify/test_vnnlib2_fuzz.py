"""Mutated VNN-LIB 2.0 queries (hypothesis): parsing and the translation to a Spec end in a
result, a one-line RobustlabError, or Unsupported (verdict unknown); never another exception."""

import pytest

from robustlab.errors import RobustlabError
from robustlab.verify.product import to_product
from robustlab.verify.vnnlib2 import Unsupported, parse

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
from hypothesis import given  # noqa: E402

QUERY = """(vnnlib-version <2.0>)
(declare-network f (declare-input X Real [2, 2]) (declare-output Y Real [3]))
(declare-network g (equal-to f) (declare-input Z Real [2, 2]) (declare-output W Real [3]))
(assert (>= X[0, 0] 0.0))
(assert (<= X[0, 0] 1.0))
(assert (and (>= X[0, 1] -1.0) (<= X[0, 1] 1.0) (>= X[1, 0] 0.5) (<= X[1, 0] 0.75)))
(assert (>= X[1, 1] 0.0))
(assert (<= X[1, 1] 1.0))
(assert (== Z[0, 0] X[0, 0]))
(assert (== Z[0, 1] (+ X[0, 1] 0.5)))
(assert (== Z[1, 0] X[1, 0]))
(assert (>= Z[1, 1] X[1, 1]))
(assert (<= Z[1, 1] 1.0))
(assert (or (and (<= Y[0] W[1]) (<= (* 2.0 Y[1]) Y[2])) (>= (* Y[0] W[2]) 3.0) (!= Y[1] 0.0)))
"""
TOKENS = ["(", ")", "X[0, 0]", "W[3]", "Q[0]", "1e5", "-", "*", "==", "or", "(equal-to h)", "[]"]


@given(
    st.lists(
        st.tuples(st.integers(0, len(QUERY)), st.integers(0, 8), st.sampled_from(TOKENS)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_queries_fail_in_one_line(edits):
    text = QUERY
    for pos, cut, tok in edits:
        pos = min(pos, len(text))
        text = text[:pos] + tok + text[pos + cut :]
    try:
        to_product(parse(text, "q.vnnlib"))
    except (RobustlabError, Unsupported) as e:
        assert str(e) and "\n" not in str(e)


def test_the_unmutated_query_reads():
    p = to_product(parse(QUERY, "q.vnnlib"))
    assert p.n_free == 5 and p.passthrough and p.products == ((0, 5),)
    assert len(p.spec) == 1 and len(p.spec.disjunct_region) == 4  # != is < or >
