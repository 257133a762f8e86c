"""Suppressions written in the checked file itself.

iptables-restore rejects a trailing ``#`` on a rule line (``Bad argument '#'``), so an end-of-line
``# noqa`` cannot exist. Three forms instead:

* ``# natlint: ignore[NL201] reason`` on a comment line: the next line that is not a comment or
  blank (a rule, or a ``:CHAIN`` declaration, where NL102 is reported);
* ``# natlint: file-ignore[NL4] reason`` in the comment lines at the top of the file (before
  ``*table``): the whole file;
* ``-m comment --comment "natlint: ignore[NL201] reason"`` inside a rule: that rule. The only form
  that survives ``iptables-save`` (which drops every ``#`` line).

The brackets hold codes, code prefixes or rule names, separated by commas or spaces. Suppressions
apply after the checks ran: a finding is dropped when its path and line match. A suppression, or
one code in it, that matched no finding is reported as NL005 (unused-suppression), and so is a
``natlint:`` comment that is not one of these forms. A code that is not enabled (``--select`` /
``ignore``) is never called unused: natlint did not look for it. Nor is a semantic code (NL2xx and
up) in a file whose analysis stopped at its budget (NL007): natlint does not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from natlint.config import normalise_selector, selector_matches
from natlint.findings import CODES, Finding
from natlint.model.ruleset import Ruleset

__all__ = ["Suppression", "find_suppressions", "apply_suppressions"]

_DIRECTIVE = re.compile(r"natlint\s*:", re.I)
_FORM = re.compile(r"natlint\s*:\s*(ignore|file-ignore)\s*\[([^\]]*)\]\s*(.*)$", re.S | re.I)
_CODE = re.compile(r"^(?:NL[0-9]{1,3}|[a-z][a-z0-9]*(?:-[a-z0-9]+)*)$")


@dataclass(slots=True)
class Suppression:
    """One directive: where it is written, what it covers, and which of its codes were used."""

    kind: str  # "line" (a comment line), "file", or "rule" (a rule's -m comment)
    codes: tuple[str, ...]
    line: int  # where it is written
    column: int
    target: int | None  # the line it covers (None: the whole file)
    reason: str = ""
    used: set[str] = field(default_factory=set)

    def covers(self, finding: Finding) -> str | None:
        """The code of this suppression that matches ``finding``, or None."""
        if self.target is not None and finding.line != self.target:
            return None
        for code in self.codes:
            if selector_matches(code, finding.code):
                return code
        return None


def _parse_codes(text: str) -> tuple[tuple[str, ...], list[str]]:
    good: list[str] = []
    bad: list[str] = []
    for word in re.split(r"[,\s]+", text.strip()):
        if not word:
            continue
        norm = normalise_selector(word)
        (good if _CODE.match(norm) else bad).append(word)
    return tuple(good), bad


def find_suppressions(ruleset: Ruleset) -> tuple[list[Suppression], list[Finding]]:
    """The file's suppressions, and NL005 findings for ``natlint:`` comments that are not one."""
    found: list[Suppression] = []
    problems: list[Finding] = []
    path = ruleset.path

    def malformed(line: int, column: int, why: str) -> None:
        problems.append(Finding("NL005", "warning", f"this natlint comment suppresses nothing: {why}", path, line,
                                column, source_line=ruleset.lines[line - 1] if line <= len(ruleset.lines) else None))

    pending: list[Suppression] = []  # comment-line suppressions waiting for their line
    header = True  # still in the comment lines at the top of the file
    for lineno, raw in enumerate(ruleset.lines, 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if not line.startswith("#"):
            header = False
            for sup in pending:
                sup.target = lineno
            found.extend(pending)
            pending = []
            continue
        directive = _DIRECTIVE.search(line)
        if directive is None or line[1 : directive.start()].strip():
            continue  # an ordinary comment (natlint: mentioned later in the text is prose)
        form = _FORM.match(line, directive.start())
        if form is None:
            malformed(lineno, 1, "expected '# natlint: ignore[CODE,...] reason' or '# natlint: file-ignore[CODE,...]'")
            continue
        kind, inside, reason = form.groups()
        codes, bad = _parse_codes(inside)
        if bad or not codes:
            malformed(lineno, 1, f"not a code or rule name: {', '.join(bad)}" if bad else "no code in the brackets")
            continue
        if kind.lower() == "file-ignore":
            if not header:
                malformed(lineno, 1, "a file-ignore must be in the comment lines at the top of the file, before"
                          " the first table")
                continue
            found.append(Suppression("file", codes, lineno, 1, None, reason.strip()))
        else:
            pending.append(Suppression("line", codes, lineno, 1, None, reason.strip()))
    for sup in pending:
        malformed(sup.line, 1, "no rule follows it")

    seen: set[tuple[int, int]] = set()
    for rule in ruleset.rules():
        for match in rule.matches:
            if match.name != "comment":
                continue
            option = match.option("comment")
            text = option.value if option is not None else None
            if not isinstance(text, str) or not text.lstrip().lower().startswith("natlint"):
                continue
            column = (option.column if option is not None and option.column else match.column) or 1
            if (rule.pos.line, column) in seen:
                continue  # '-s a,b' made two rules of one line
            seen.add((rule.pos.line, column))
            form = _FORM.match(text.lstrip())
            if form is None or form.group(1).lower() != "ignore":
                malformed(rule.pos.line, column, "expected --comment \"natlint: ignore[CODE,...] reason\"")
                continue
            codes, bad = _parse_codes(form.group(2))
            if bad or not codes:
                malformed(rule.pos.line, column,
                          f"not a code or rule name: {', '.join(bad)}" if bad else "no code in the brackets")
                continue
            found.append(Suppression("rule", codes, rule.pos.line, column, rule.pos.line, form.group(3).strip()))
    return found, problems


def apply_suppressions(ruleset: Ruleset, findings: Sequence[Finding],
                       enabled: Callable[[str], bool] = lambda code: True) -> list[Finding]:
    """``findings`` of ``ruleset`` without the suppressed ones, plus NL005 for unused suppressions.

    ``enabled(code)`` says whether natlint looked for a code in this file (selection).
    """
    suppressions, problems = find_suppressions(ruleset)
    if not suppressions:
        return sorted([*findings, *problems], key=Finding.sort_key)
    by_line: dict[int, list[Suppression]] = {}
    whole_file: list[Suppression] = []
    for sup in suppressions:
        if sup.target is None:
            whole_file.append(sup)
        else:
            by_line.setdefault(sup.target, []).append(sup)
    kept: list[Finding] = []
    for finding in findings:
        hit = False
        if finding.path == ruleset.path:
            for sup in (*by_line.get(finding.line, ()), *whole_file):
                code = sup.covers(finding)
                if code is not None:
                    sup.used.add(code)
                    hit = True
        if not hit:
            kept.append(finding)
    incomplete = any(f.code == "NL007" for f in findings)
    for sup in suppressions:
        unused = [c for c in sup.codes if c not in sup.used and _looked_for(c, enabled, incomplete)]
        if not unused:
            continue
        where = {"line": f"line {sup.target}", "rule": "this rule", "file": "this file"}[sup.kind]
        unknown = [c for c in unused if not any(selector_matches(c, known) for known in CODES)]
        if unknown:
            where += f" ({', '.join(unknown)}: no such natlint code)"
        whole = len(unused) == len(sup.codes)
        what = "suppression" if whole else f"code{'s' if len(unused) > 1 else ''} in a suppression"
        problems.append(Finding(
            "NL005", "warning",
            f"unused {what}: {', '.join(unused)} is not reported on {where}; remove "
            f"{'it' if whole else ', '.join(unused) + ' from the brackets'}",
            ruleset.path, sup.line, sup.column,
            source_line=ruleset.lines[sup.line - 1] if sup.line <= len(ruleset.lines) else None,
        ))
    # A file-ignore can silence NL005 too (without counting as used: nothing else would use it).
    problems = [p for p in problems if not any(s.covers(p) for s in whole_file)]
    return sorted([*kept, *problems], key=Finding.sort_key)


def _looked_for(selector: str, enabled: Callable[[str], bool], incomplete: bool) -> bool:
    codes: Iterable[str] = [c for c in CODES if selector_matches(selector, c)] or [selector]
    for code in codes:
        semantic = code.startswith("NL") and code[2:3] not in ("0", "1")
        if enabled(code) and not (incomplete and semantic):
            return True
    return False
