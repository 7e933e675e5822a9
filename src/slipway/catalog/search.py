"""The `q` language on SQLite: PostgreSQL's `websearch_to_tsquery` syntax, translated to an
FTS5 MATCH expression, so one query means the same thing on both backends.

Supported, as on PostgreSQL: words (all must match), "quoted phrases", `or` between terms,
and `-` to exclude a term. English stop words are dropped (PostgreSQL's `english`
configuration drops the same list), and both sides stem (FTS5's porter tokenizer).

User input never reaches FTS5's own syntax (column filters, NEAR, prefix `*`): every term
is re-emitted as a double-quoted string of word characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: PostgreSQL's `english` stop-word list (the Snowball list it ships).
# One string keeps the 127 words readable; split once at import.
ENGLISH_STOP_WORDS = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what which
    who whom this that these those am is are was were be been being have has had having do
    does did doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on
    off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will
    just don should now
    """.split()  # noqa: SIM905
)
#: Bounds the MATCH expression however long `q` is (q itself is capped at 200 characters).
MAX_TERMS = 16

_CHUNK = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class _Term:
    words: tuple[str, ...]
    negated: bool

    def fts5(self) -> str:
        # A double-quoted FTS5 string is a phrase; the words hold no quotes (\w only).
        return '"' + " ".join(self.words) + '"'


def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS)


def fts5_query(q: str) -> str | None:
    """The FTS5 MATCH expression for `q`, or None when nothing searchable is left."""
    groups: list[list[_Term]] = [[]]
    pending_or = False
    count = 0
    for match in _CHUNK.finditer(q):
        negated_phrase, phrase, bare = match.groups()
        if bare is not None and bare.lower() == "or":
            pending_or = bool(groups[-1])
            continue
        if bare is not None:
            negated = bare.startswith("-")
            words = _words(bare)
        else:
            negated = bool(negated_phrase)
            words = _words(phrase)
        if not words:
            continue
        if pending_or:
            groups.append([])
            pending_or = False
        groups[-1].append(_Term(words, negated))
        count += 1
        if count >= MAX_TERMS:
            break
    clauses = []
    for group in groups:
        positive = [term.fts5() for term in group if not term.negated]
        negative = [term.fts5() for term in group if term.negated]
        # FTS5's NOT is binary: a clause made only of exclusions cannot be expressed, and
        # is dropped (PostgreSQL would match every row lacking the words).
        if positive:
            clauses.append(" AND ".join(positive) + "".join(f" NOT {n}" for n in negative))
    if not clauses:
        return None
    return " OR ".join(f"({clause})" for clause in clauses)
