"""Split one iptables-restore line into words exactly as iptables-restore does.

This is the state machine of ``add_param_to_argv`` in iptables' ``xshared.c`` (1.8.x):

* words are separated by runs of space, tab and newline (not ``\\r``: a CRLF file keeps
  the ``\\r`` in its last word, which is why iptables-restore rejects such files);
* a ``"`` outside quotes opens a quote without ending the current word (``x"y z"`` is
  ``xy z``);
* inside quotes a backslash escapes any character and a ``"`` closes the quote *and* ends
  the word, even an empty one (``""`` is an empty argument, ``"ab"cd`` is ``ab`` + ``cd``);
* outside quotes a backslash is an ordinary character; single quotes are ordinary;
* an unterminated quote runs to the end of the line and takes the line's newline into the
  word (``-j "DROP`` jumps to ``DROP\\n``), except on a last line without a newline.

``shlex`` is not equivalent and must not be used.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Word", "split_words"]

_SEPARATORS = frozenset(" \t\n")
# Only these three separate words: a vertical tab, form feed, \x1c-\x1f or a no-break space
# is part of the word (str.split() would split on them; iptables-restore does not).
_PLAIN_WORD = re.compile(r"[^ \t\n]+")


class Word(NamedTuple):
    """One argument of a rule line and where it starts (0-based column)."""

    text: str
    column: int
    quoted: bool


def split_words(line: str, *, newline: bool = True) -> list[Word]:
    """Return the words of ``line`` (without its line end) as iptables-restore's tokenizer
    produces them; ``newline``: the line was ended by a newline in the file."""
    if '"' not in line:
        return [Word(m.group(), m.start(), False) for m in _PLAIN_WORD.finditer(line)]
    return _split_quoted(line, newline)


def _split_quoted(line: str, newline: bool = True) -> list[Word]:
    words: list[Word] = []
    buf: list[str] = []
    start = -1
    quote_open = False
    escaped = False
    quoted = False
    for col, ch in enumerate(line):
        if quote_open:
            if escaped:
                buf.append(ch)
                escaped = False
                continue
            if ch == "\\":
                escaped = True
                continue
            if ch != '"':
                buf.append(ch)
                continue
            # A closing quote ends the word, even an empty one.
            quote_open = False
            words.append(Word("".join(buf), start, True))
            buf.clear()
            start = -1
            quoted = False
            continue
        if ch == '"':
            quote_open = True
            quoted = True
            if start < 0:
                start = col
            continue
        if ch in _SEPARATORS:
            if buf:
                words.append(Word("".join(buf), start, quoted))
                buf.clear()
                start = -1
                quoted = False
            continue
        if start < 0:
            start = col
        buf.append(ch)
    if quote_open and newline:
        buf.append("\n")  # fgets() keeps the newline, and the open quote takes it in
    if buf:
        words.append(Word("".join(buf), start, quoted))
    return words
