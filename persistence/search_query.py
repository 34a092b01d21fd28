"""The search query language, parsed once and rendered for each database's full-text engine.

Syntax (issue 15; the shape of web search boxes and PostgreSQL's `websearch_to_tsquery`):

- `acme labs`        every word must match (AND);
- `"acme labs"`      the words as a phrase, in this order, adjacent;
- `acme or globex`   either side (`or`, any case, binds the terms on its two sides);
- `-globex`          excluded (also `-"a phrase"` and `-pre*`);
- `acm*`             a prefix (at least `MIN_PREFIX` characters).

Words are split exactly as the index splits text (`tokens`): runs of letters and digits,
lower-cased, accents removed. So `jane@acme.com` is the phrase `"jane acme com"`, as FTS5's
`unicode61` tokenizer sees it, and the same words reach PostgreSQL (whose own parser would keep an
e-mail address or a host name as one token; the index feeds it these words instead).

`parse` raises `InvalidInput` (400 VALIDATION_ERROR) for an empty query, unbalanced quotes, a
dangling `or`, a query with nothing but exclusions, a too short prefix or too many terms: never
a database error. The renderings (`fts5`, `tsquery`) quote every word, and words hold only
letters and digits, so no user input reaches either engine's operator syntax.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from persistence.errors import InvalidInput

MAX_QUERY_LENGTH = 256
MAX_TERMS = 16
MAX_PHRASE_WORDS = 8
MIN_PREFIX = 2
_WORD = re.compile(r"[^\W_]+")
# A query token: an optional `-`, then a quoted phrase (possibly unterminated) or a bare word.
_TOKEN = re.compile(r'\s*(-?)(?:"([^"]*)("?)|([^\s"]+))')


def fold(text: str) -> str:
    """Return `text` lower-cased with accents removed (NFD without combining marks): `Émile` -> `emile`.

    The same folding as FTS5's `unicode61 remove_diacritics 2` tokenizer, so the words the
    PostgreSQL index and the query parser see are the words SQLite's index sees.
    """
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).lower()


def tokens(text: str) -> list[str]:
    """Return the words of `text` as the index sees them: runs of letters and digits, folded."""
    return _WORD.findall(fold(text))


@dataclass(frozen=True)
class Term:
    """One searched unit: a word (`words` of one), a phrase (several), optionally a prefix (last word)."""

    words: tuple[str, ...]
    prefix: bool = False

    def fts5(self) -> str:
        """The FTS5 phrase string: `"acme labs"`, `"acm"*`."""
        return '"' + " ".join(self.words) + '"' + ("*" if self.prefix else "")

    def tsquery(self) -> str:
        """The tsquery operand: `'acme' <-> 'labs'`, `'acm':*`."""
        quoted = [f"'{word}'" for word in self.words]
        if self.prefix:
            quoted[-1] += ":*"
        text = " <-> ".join(quoted)
        return f"( {text} )" if len(quoted) > 1 else text


@dataclass(frozen=True)
class Query:
    """A parsed query: `groups` all must match (each group: any of its terms); no `excluded` term may."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...] = ()

    def terms(self) -> list[Term]:
        """Every positive term (what a snippet highlights)."""
        return [term for group in self.groups for term in group]

    def fts5(self) -> str:
        """The FTS5 MATCH expression: `"acme" AND ("a" OR "b") NOT ("x" OR "y")`."""
        found = " AND ".join(_any(group, " OR ", Term.fts5) for group in self.groups)
        if not self.excluded:
            return found
        return f"({found}) NOT {_any(self.excluded, ' OR ', Term.fts5)}"

    def tsquery(self) -> str:
        """The `to_tsquery` text: `'acme' & ( 'a' | 'b' ) & !( 'x' | 'y' )`."""
        parts = [_any(group, " | ", Term.tsquery) for group in self.groups]
        parts += [f"!{_parenthesized(term.tsquery())}" for term in self.excluded]
        return " & ".join(parts)


def parse(text: str) -> Query:
    """Parse a user's query (syntax in the module docstring); raise InvalidInput naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise _invalid("query: enter at least one word to search for")
    if len(text) > MAX_QUERY_LENGTH:
        raise _invalid(f"query: at most {MAX_QUERY_LENGTH} characters")
    if text.count('"') % 2:
        raise _invalid('query: a quoted phrase is not closed (unbalanced ")')
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    pending_or = False
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() != position:  # pragma: no cover - the pattern matches every non-space run
            raise _invalid("query: unreadable input")
        position = match.end()
        negate, phrase, _closed, word = match.groups()
        if word is not None and not negate and word.casefold() == "or":
            if pending_or or not groups:
                raise _invalid("query: `or` needs a term on each side")
            pending_or = True
            continue
        term = _term(phrase if phrase is not None else word, quoted=phrase is not None)
        if term is None:
            continue  # punctuation only (`-`, `*`, `...`): nothing to search
        if negate:
            if pending_or:
                raise _invalid("query: `or` cannot join an excluded term")
            excluded.append(term)
        elif pending_or:
            groups[-1].append(term)
            pending_or = False
        else:
            groups.append([term])
    if text[position:].strip():  # pragma: no cover - see above
        raise _invalid("query: unreadable input")
    if pending_or:
        raise _invalid("query: `or` needs a term on each side")
    if not groups:
        raise _invalid("query: enter at least one word to search for (exclusions alone find nothing)")
    if sum(map(len, groups)) + len(excluded) > MAX_TERMS:
        raise _invalid(f"query: at most {MAX_TERMS} terms")
    return Query(tuple(tuple(group) for group in groups), tuple(excluded))


def _term(raw: str, *, quoted: bool) -> Term | None:
    words = tuple(tokens(raw))
    if not words:
        return None
    if len(words) > MAX_PHRASE_WORDS:
        raise _invalid(f"query: a phrase has at most {MAX_PHRASE_WORDS} words")
    prefix = not quoted and raw.endswith("*") and len(words) == 1
    if prefix and len(words[0]) < MIN_PREFIX:
        raise _invalid(f"query: a prefix needs at least {MIN_PREFIX} characters before *")
    return Term(words, prefix)


def _any(terms, separator: str, render) -> str:
    rendered = [render(term) for term in terms]
    return rendered[0] if len(rendered) == 1 else "(" + separator.join(rendered) + ")"


def _parenthesized(text: str) -> str:
    return text if text.startswith("(") else f"( {text} )"


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, details={"field": "query"})
