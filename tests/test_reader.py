"""How the reader reads a file, pinned as iptables-restore 1.8.9 (nf_tables) behaves.

Each case was checked against the real iptables-restore in a network namespace (the kernel
tests in test_differential_syntax.py keep checking the same ground).
"""

from __future__ import annotations

import pytest

import natlint
from natlint.checks import run_checks
from natlint.findings import Finding
from natlint.model.ruleset import Ruleset


def _load(text: str | bytes, family: int = 4) -> Ruleset:
    return natlint.load(text, family=family)  # type: ignore[arg-type]


def _found(text: str | bytes, family: int = 4) -> list[Finding]:
    return [f for f in run_checks(_load(text, family)) if f.severity != "info"]


def _codes(text: str | bytes, family: int = 4) -> set[tuple[str, str, int]]:
    return {(f.code, f.severity, f.line) for f in _found(text, family)}


def _rules(ruleset: Ruleset, chain: str, table: str = "filter") -> list[str]:
    return [r.text for r in ruleset.tables[table].chains[chain].rules]


def wrap(*lines: str, table: str = "filter") -> str:
    return "\n".join([f"*{table}", *lines, "COMMIT"]) + "\n"


# ---- line ends, blank lines, bytes -------------------------------------------------------------


def test_crlf_is_reported_once_where_iptables_restore_fails() -> None:
    text = "# header\r\n*filter\r\n:INPUT ACCEPT [0:0]\r\n-A INPUT -j ACCEPT\r\nCOMMIT\r\n"
    assert _codes(text) == {("NL003", "error", 2)}  # the comment is fine, '*filter\r' is not
    rules = _load(text).tables["filter"].chains["INPUT"].rules
    assert [r.target.name for r in rules if r.target] == ["ACCEPT"]  # read as meant


def test_crlf_on_comments_and_chain_lines_only_is_accepted() -> None:
    # iptables-restore ignores comments and the counters field of ':' lines.
    text = "# a\r\n*filter\n:INPUT ACCEPT [0:0]\r\n:USR - [0:0]\r\n-A INPUT -j USR\nCOMMIT\n"
    assert not [f for f in _found(text) if f.code in ("NL001", "NL002", "NL003")]


def test_crlf_in_a_free_text_value_is_harmless() -> None:
    assert not _found("*filter\n-A INPUT -m comment --comment hello\r\nCOMMIT\n")
    assert ("NL003", "error", 2) in _codes("*filter\n-A INPUT -j ACCEPT\r\nCOMMIT\n")
    assert ("NL003", "error", 2) in _codes("*filter\n\r\nCOMMIT\n")  # a blank CRLF line


def test_only_a_truly_empty_line_is_skipped() -> None:
    assert not _found("\n*filter\n\n-A INPUT -j ACCEPT\n\nCOMMIT\n\n")
    assert _codes("*filter\n \nCOMMIT\n") == {("NL001", "error", 2)}  # "no command specified"
    assert _codes("*filter\nCOMMIT\n\t\n") == {("NL001", "error", 3)}  # "line 3 failed"


def test_commit_with_trailing_space() -> None:
    found = _found("*filter\n-A INPUT -j ACCEPT\nCOMMIT \n")
    assert {(f.code, f.line, f.column) for f in found} == {("NL003", 3, 7)}


def test_missing_commit_still_reads_the_table() -> None:
    ruleset = _load("*filter\n:INPUT DROP [0:0]\n-A INPUT -j ACCEPT\n")
    assert {(f.code, f.line) for f in ruleset.diagnostics} == {("NL003", 3)}  # type: ignore[attr-defined]
    assert ruleset.tables["filter"].chains["INPUT"].policy == "DROP"
    assert len(ruleset.tables["filter"].chains["INPUT"].rules) == 1


def test_a_new_table_before_commit() -> None:
    assert ("NL003", "error", 2) in _codes("*filter\n*nat\nCOMMIT\n")


def test_bom_fails_line_one() -> None:
    assert _codes("\ufeff*filter\nCOMMIT\n".encode()) == {("NL003", "error", 1)}


def test_nul_byte_cuts_the_line() -> None:
    # iptables-restore never sees what follows a NUL: the rule loads, the junk is ignored.
    assert _codes(b"*filter\n-A INPUT -j ACCEPT\x00junk\nCOMMIT\x00x\n") == {("NL006", "warning", 2),
                                                                               ("NL006", "warning", 3)}
    assert ("NL001", "error", 2) in _codes(b"*filter\n\x00junk\nCOMMIT\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n",
        b"\xff\xfe\x00\x01garbage\x80\n",
        b"*filter\n-A INPUT " + b"-s 1.2.3.4 " * 3000 + b"\nCOMMIT\n",
        b"#" + b"x" * 20000 + b"\n",
        bytes(range(256)) * 4,
        b'*filter\n-A INPUT -m comment --comment "unterminated\nCOMMIT\n',
        b"*nat\n:A - [0:0]\n-A A -j A\n-A PREROUTING -j A\n",
    ],
)
def test_junk_never_raises(data: bytes) -> None:
    ruleset = _load(data)
    for f in run_checks(ruleset):
        assert 1 <= f.line <= max(len(ruleset.lines), 1)


def test_long_line_and_long_word() -> None:
    comment = "#" + "x" * 10238  # 10239 bytes: fgets() reads it whole
    assert not _found(comment + "\n*filter\nCOMMIT\n")
    assert ("NL001", "error", 1) in _codes(comment + "x\n*filter\nCOMMIT\n")
    assert not _found(wrap("-A INPUT -j LOG --log-prefix " + "x" * 20))
    assert ("NL001", "error", 2) in _codes(wrap("-A INPUT -m comment --comment " + "x" * 1024))  # "Parameter too long!"


def test_too_many_words() -> None:
    assert not _found(wrap("-A INPUT " + " ".join(["-v"] * 249)))  # 251 words
    assert ("NL001", "error", 2) in _codes(wrap("-A INPUT " + " ".join(["-v"] * 250)))


def test_only_space_tab_and_newline_separate_words() -> None:
    assert ("NL001", "error", 2) in _codes(wrap("-A INPUT\x0b-j ACCEPT"))
    assert ("NL001", "error", 2) in _codes(wrap("-A INPUT\u00a0-j ACCEPT"))
    assert not _found(wrap("-A INPUT\t-j\t ACCEPT"))


def test_unterminated_quote_takes_the_newline() -> None:
    assert ("NL101", "error", 2) in _codes(wrap('-A INPUT -j "DROP'))  # jumps to "DROP\n"
    assert not _found(wrap('-A INPUT -m comment --comment "open'))


# ---- structure ---------------------------------------------------------------------------------


def test_rule_outside_a_table() -> None:
    assert _codes("-A INPUT -j ACCEPT\n*filter\nCOMMIT\n") == {("NL003", "error", 1)}


def test_unknown_table() -> None:
    assert ("NL003", "error", 1) in _codes("*firewall\n-A INPUT -j ACCEPT\nCOMMIT\n")


def test_undeclared_chain() -> None:
    assert ("NL003", "error", 2) in _codes(wrap("-A NOPE -j ACCEPT"))
    assert ("NL101", "error", 2) in _codes(wrap("-A INPUT -j NOPE"))


def test_jump_to_a_builtin_chain() -> None:
    assert ("NL003", "error", 3) in _codes(wrap(":USR - [0:0]", "-A USR -j INPUT", "-A INPUT -j USR"))


def test_chain_names() -> None:
    assert _codes(wrap(":" + "A" * 28 + " - [0:0]", "-A INPUT -j " + "A" * 28)) == set()
    assert ("NL002", "error", 2) in _codes(wrap(":" + "A" * 29 + " - [0:0]"))
    assert ("NL002", "error", 2) in _codes(wrap(":-X - [0:0]"))
    assert ("NL002", "error", 2) in _codes(wrap(":RETURN - [0:0]"))
    assert ("NL002", "error", 2) in _codes(wrap(":A\x0bB - [0:0]"))  # "Invalid chain name"
    # ':LOG' is accepted (only loaded targets clash), but -j LOG reaches the target: a warning.
    assert ("NL002", "warning", 2) in _codes(wrap(":LOG - [0:0]", "-A INPUT -j LOG"))
    assert ("NL002", "error", 2) in _codes(wrap("-N LOG"))


def test_chain_line_counters_are_not_checked() -> None:
    # iptables-restore reads them only with -c: a warning, not an error.
    assert _codes(wrap(":INPUT ACCEPT 0:0")) == {("NL002", "warning", 2)}


def test_other_family_flag_skips_the_line() -> None:
    ruleset = _load(wrap("-6 -A INPUT -s ::1 -j ACCEPT"))
    assert {(f.code, f.severity) for f in run_checks(ruleset)} == {("NL006", "warning")}
    assert not ruleset.tables["filter"].chains["INPUT"].rules
    # getopt stops at -6: what follows is never parsed, what precedes is.
    assert _codes(wrap("-A INPUT -6 --dport")) == {("NL006", "warning", 2)}
    assert ("NL002", "error", 2) in _codes(wrap("-A INPUT -p tcp --dport 99999 -6"))
    assert _codes(wrap("-A INPUT -s ::1 -4 -j ACCEPT"), family=6) == {("NL006", "warning", 2)}


def test_counters_prefix() -> None:
    ruleset = _load(wrap("[12:3456] -A INPUT -j ACCEPT"))
    assert not ruleset.diagnostics
    assert ruleset.tables["filter"].chains["INPUT"].rules[0].counters == (12, 3456)
    assert ("NL001", "error", 2) in _codes(wrap("[12] -A INPUT -j ACCEPT"))  # "Bad line 2: need ]"
    assert ("NL001", "error", 2) in _codes(wrap("[1:2 -A INPUT -j ACCEPT"))
    assert _codes(wrap("[1:x] -A INPUT -j ACCEPT")) == {("NL002", "warning", 2)}  # only -c reads them


# ---- restore commands, applied in order --------------------------------------------------------


def test_commands_are_applied_in_order() -> None:
    ruleset = _load(wrap(
        "-N USR",
        "-A USR -s 10.0.0.1 -j ACCEPT",
        "-A USR -s 10.0.0.2 -j ACCEPT",
        "-I USR 1 -s 10.0.0.3 -j ACCEPT",
        "-I USR -s 10.0.0.4 -j ACCEPT",
        "-D USR 2",
        "-D USR -s 10.0.0.2 -j ACCEPT",
        "-A INPUT -j USR",
        "-P INPUT DROP",
        "-N TMP",
        "-X TMP",
        "-N GONE",
        "-A GONE -j DROP",
        "-F GONE",
        "-X GONE",
    ))
    assert not [f for f in run_checks(ruleset) if f.severity != "info"]
    table = ruleset.tables["filter"]
    assert _rules(ruleset, "USR") == ["-I USR -s 10.0.0.4 -j ACCEPT", "-A USR -s 10.0.0.1 -j ACCEPT"]
    assert table.chains["INPUT"].policy == "DROP"
    assert "TMP" not in table.chains and "GONE" not in table.chains


@pytest.mark.parametrize(
    ("lines", "line"),
    [
        (["-D INPUT 1"], 2),  # no rule 1
        (["-D INPUT -s 10.0.0.1 -j ACCEPT"], 2),  # no such rule: 'Bad rule'
        (["-I INPUT 3 -j ACCEPT"], 2),  # 'Index of insertion too big'
        (["-F NOPE"], 2),
        (["-X NOPE"], 2),
        (["-X INPUT"], 2),
        ([":USR - [0:0]", "-A INPUT -j USR", "-X USR"], 4),  # still referenced
        ([":USR - [0:0]", "-A USR -j ACCEPT", "-X USR"], 4),  # not empty
        ([":USR - [0:0]", "-P USR DROP"], 3),
        (["-P INPUT RETURN"], 2),
        ([":USR - [0:0]", "-N USR"], 3),
        (["-C INPUT -j ACCEPT"], 2),
        ([":A - [0:0]", ":B - [0:0]", "-E A B"], 4),
    ],
)
def test_command_failures(lines: list[str], line: int) -> None:
    assert ("error", line) in {(f.severity, f.line) for f in _found(wrap(*lines))}


def test_rename_is_a_warning_for_nf_tables() -> None:
    ruleset = _load(wrap(":OLD - [0:0]", "-E OLD NEW", "-A INPUT -j NEW"))
    assert ("NL003", "warning", 3) in {(f.code, f.severity, f.line) for f in ruleset.diagnostics}  # type: ignore[attr-defined]
    assert "NEW" in ruleset.tables["filter"].chains


# ---- words and options -------------------------------------------------------------------------


def test_old_negation_is_an_error_read_as_meant() -> None:
    ruleset = _load(wrap("-A INPUT -s ! 10.0.0.1 -j DROP"))
    assert {(f.code, f.line) for f in ruleset.diagnostics} == {("NL001", 2)}  # type: ignore[attr-defined]
    rule = ruleset.tables["filter"].chains["INPUT"].rules[0]
    assert rule.source is not None and rule.source.invert


def test_abbreviations() -> None:
    ruleset = _load(wrap("--app INPUT --sou 10.0.0.1 -p tcp --dp 22 --ju ACCEPT"))
    assert not ruleset.diagnostics
    rule = ruleset.tables["filter"].chains["INPUT"].rules[0]
    assert str(rule.source.value) == "10.0.0.1/32"  # type: ignore[union-attr]
    assert rule.matches[0].option("dport") is not None


def test_abbreviation_resolves_in_the_options_loaded_so_far() -> None:
    # -m multiport is loaded, tcp only on demand: '--dpo' is --dports, not ambiguous.
    ruleset = _load(wrap("-A INPUT -p tcp -m multiport --dpo 22,80 -j ACCEPT"))
    assert not ruleset.diagnostics
    assert ruleset.tables["filter"].chains["INPUT"].rules[0].matches[0].name == "multiport"


@pytest.mark.parametrize("word", ["--d", "--de", "--in", "--ipv", "--ctst"])
def test_ambiguous_abbreviations(word: str) -> None:
    found = _found(wrap(f"-A INPUT -m conntrack {word} x -j ACCEPT"))
    assert [(f.code, f.line) for f in found if f.severity == "error"] == [("NL001", 2)]
    assert "ambiguous" in found[0].message


def test_quotes() -> None:
    ruleset = _load(wrap('-A INPUT -m comment --comment "a \\"b\\" c" -j ACCEPT'))
    assert not ruleset.diagnostics
    comment = ruleset.tables["filter"].chains["INPUT"].rules[0].matches[0].options[0]
    assert comment.value == 'a "b" c'


def test_interface_names_the_kernel_cannot_have_are_warnings() -> None:
    assert _codes(wrap("-A INPUT -i eth0:1 -j ACCEPT")) == {("NL002", "warning", 2)}
    assert ("NL002", "error", 2) in _codes(wrap("-A INPUT -i abcdefghijklmnop -j ACCEPT"))


def test_negation_rules_of_the_core() -> None:
    assert ("NL002", "error", 2) in _codes(wrap("-A INPUT ! -s 0.0.0.0/0 -j ACCEPT"))  # nft: EINVAL
    assert ("NL001", "error", 2) in _codes(wrap("-A INPUT ! -s 10.0.0.1 -d 10.0.0.2,10.0.0.3 -j ACCEPT"))
    # it loads (tcp is loaded) and never matches: no syntax finding, only NL203
    assert {f.code for f in _found(wrap("-A INPUT ! -p tcp --dport 80 -j ACCEPT"))} == {"NL203"}


def test_module_names_that_cannot_exist() -> None:
    assert ("NL001", "error", 2) in _codes(wrap('-A INPUT -m "" -j ACCEPT'))
    assert ("NL001", "error", 2) in _codes(wrap("-A INPUT -m 'tcp' -j ACCEPT"))
