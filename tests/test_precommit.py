"""The pre-commit hooks of .pre-commit-hooks.yaml, installed by the real pre-commit from this checkout.

pre-commit clones a repository at a commit, so the test copies the working tree (tracked and
untracked files that git does not ignore, with uncommitted changes) into a temporary git repo,
commits it there and points a consumer repo's .pre-commit-config.yaml at that commit. pre-commit
then builds the hook's virtualenv and pip-installs natlint and its dependencies: that needs a
package index. When the install fails for lack of one, the test is skipped and says why.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"

BAD = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -j LOGDROP\nCOMMIT\n"
CLEAN = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n"
UDEV = 'SUBSYSTEM=="usb", ATTR{idVendor}=="1d6b", MODE="0664"\n'

# What pip prints when it cannot reach a package index (then the test is skipped, not failed).
_NO_INDEX = ("No matching distribution found", "Could not find a version that satisfies",
             "Temporary failure in name resolution", "Network is unreachable", "Failed to establish a new connection",
             "NewConnectionError", "Max retries exceeded", "ProxyError")

_GIT_ENV = {"GIT_AUTHOR_NAME": "natlint test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "natlint test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "GIT_CONFIG_NOSYSTEM": "1"}


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV, "HOME": str(cwd)}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout


def _snapshot(dest: Path) -> str:
    """Commit this checkout's working tree (as it is now) in a new repo at ``dest``; its sha."""
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # deleted but still tracked files are left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "natlint working tree for the pre-commit test")
    return _git(dest, "rev-parse", "HEAD").strip()


def _pre_commit(repo: Path, home: Path, *args: str,
                path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_GIT_ENV, "PRE_COMMIT_HOME": str(home), "HOME": str(repo), "NO_COLOR": "1",
           "PRE_COMMIT_COLOR": "never"}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900, check=False)


def _fake_save(folder: Path, name: str, text: str) -> None:
    script = folder / name
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}EOF\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_hooks_fail_on_a_bad_dump_and_pass_on_a_clean_one(tmp_path: Path) -> None:
    pytest.importorskip("pre_commit", reason="pre-commit is not installed (pip install -e '.[test]')")
    source = tmp_path / "natlint"
    source.mkdir()
    sha = _snapshot(source)

    repo = tmp_path / "consumer"
    (repo / "etc" / "iptables").mkdir(parents=True)
    (repo / "etc" / "udev").mkdir(parents=True)
    (repo / "etc" / "sysconfig").mkdir(parents=True)
    (repo / "etc" / "iptables" / "rules.v4").write_text(BAD, encoding="utf-8")
    (repo / "etc" / "sysconfig" / "iptables").write_text(CLEAN, encoding="utf-8")
    (repo / "etc" / "edge.rules").write_text(CLEAN, encoding="utf-8")
    (repo / "etc" / "udev" / "99-usb.rules").write_text(UDEV, encoding="utf-8")
    (repo / "notes.txt").write_text("-A INPUT -j NOWHERE\n", encoding="utf-8")  # not an iptables name
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n-   repo: {source}\n    rev: {sha}\n    hooks:\n    -   id: natlint\n"
        "    -   id: natlint-system\n        stages: [manual]\n", encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    home = tmp_path / "pre-commit-home"

    failed = _pre_commit(repo, home, "run", "natlint", "--all-files", "--verbose")
    output = failed.stdout + failed.stderr
    if failed.returncode not in (0, 1) or "An unexpected error has occurred" in output:
        if any(marker in output for marker in _NO_INDEX):
            pytest.skip("pre-commit could not install natlint's dependencies (no package index reachable):\n"
                        + output[-2000:])
        raise AssertionError(output)
    assert failed.returncode == 1, output
    assert "etc/iptables/rules.v4:5:10: NL101 [error]" in output, output
    assert "skipped etc/udev/99-usb.rules: not an iptables file" in output, output
    assert "notes.txt" not in output  # the hook's files pattern leaves it out
    assert "edge.rules:" not in output and "sysconfig/iptables:" not in output  # checked, clean

    (repo / "etc" / "iptables" / "rules.v4").write_text(CLEAN, encoding="utf-8")
    _git(repo, "add", "-A")
    passed = _pre_commit(repo, home, "run", "natlint", "--all-files", "--verbose")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout

    # natlint-system, with stand-ins for iptables-save / ip6tables-save (first on PATH): the
    # hook installed by pre-commit runs them and checks their output.
    fakes = tmp_path / "bin"
    fakes.mkdir()
    _fake_save(fakes, "iptables-save", "# Generated by iptables-save v1.8.9\n" + BAD)
    _fake_save(fakes, "ip6tables-save", "# Generated by ip6tables-save v1.8.9\n" + CLEAN)
    live = _pre_commit(repo, home, "run", "natlint-system", "--hook-stage", "manual", "--verbose",
                       path_prefix=fakes)
    assert live.returncode == 1, live.stdout + live.stderr
    assert "iptables-save:6:10: NL101 [error]" in live.stdout
    _fake_save(fakes, "iptables-save", CLEAN)
    live = _pre_commit(repo, home, "run", "natlint-system", "--hook-stage", "manual", path_prefix=fakes)
    assert live.returncode == 0, live.stdout + live.stderr


# ---- the pieces the hooks run (no pre-commit needed) ---------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (CLEAN.encode(), True),
    (b"# only a header\n*nat\n", True),
    (b":INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n", True),
    (b"-A INPUT -j ACCEPT\r\nCOMMIT\r\n", True),
    (UDEV.encode(), False),
    (b"-D\n-b 8192\n-a always,exit -F arch=b64 -S execve -k exec\n-w /etc/passwd -p wa -k identity\n", False),
    (b'polkit.addRule(function(action, subject) {\n  return polkit.Result.YES;\n});\n', False),
    (b"alert tcp any any -> $HOME_NET 22 (msg:\"ssh\"; sid:1;)\n", False),
    (b"", False),
])
def test_looks_like_iptables(data: bytes, expected: bool) -> None:
    from natlint.syntax.sniff import looks_like_iptables

    assert looks_like_iptables(data) is expected


def test_only_iptables_skips_other_rules_files_but_never_a_known_name(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from natlint.cli import main

    udev = tmp_path / "99-usb.rules"
    udev.write_text(UDEV, encoding="utf-8")
    broken = tmp_path / "rules.v4"
    broken.write_text("-A INPUT -j ACCEPT\n", encoding="utf-8")  # no *filter: still checked (NL003)
    result = CliRunner().invoke(main, ["check", "--isolated", "--only-iptables", str(udev), str(broken)])
    assert result.exit_code == 1, result.output
    assert f"skipped {udev}: not an iptables file" in result.stderr
    assert f"{broken}:1:" in result.stdout and str(udev) + ":" not in result.stdout
    # without the option, the udev file is checked (and is full of syntax errors)
    result = CliRunner().invoke(main, ["check", "--isolated", str(udev)])
    assert result.exit_code == 1 and " NL003 [error] " in result.stdout


def _system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v4: str | None, v6: str | None,
            *args: str) -> tuple[int, str, str]:
    """natlint-system with stand-ins for the save commands (None: not installed)."""
    import natlint.system as system

    fakes = tmp_path / "bin"
    fakes.mkdir(exist_ok=True)
    cat = shutil.which("cat")
    if cat is not None and not (fakes / "cat").exists():
        (fakes / "cat").symlink_to(cat)  # the stand-ins use it; PATH is only this folder
    for name, script in (("iptables-save", v4), ("ip6tables-save", v6)):
        (fakes / name).unlink(missing_ok=True)
        if script is not None:
            (fakes / name).write_text("#!/bin/sh\n" + script, encoding="utf-8")
            (fakes / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(fakes))
    monkeypatch.setattr(system, "_SBIN", ())
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = system.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _cat(text: str) -> str:
    return f"cat <<'EOF'\n{text}EOF\n"


def test_natlint_system_checks_both_families(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _system(tmp_path, monkeypatch, _cat(BAD), _cat("# Generated by ip6tables-save\n" + CLEAN))
    assert code == 1 and "iptables-save:5:10: NL101 [error]" in out
    code, out, err = _system(tmp_path, monkeypatch, _cat(CLEAN), _cat(BAD), "--format", "github")
    assert code == 1 and "::error file=ip6tables-save,line=5" in out
    code, _, err = _system(tmp_path, monkeypatch, _cat(CLEAN), None)
    assert code == 0 and "IPv6 not checked" in err
    code, _, err = _system(tmp_path, monkeypatch, _cat(CLEAN),
                           "echo \"ip6tables-save: can't initialize: Address family not supported by protocol\" >&2;"
                           " exit 1\n")
    assert code == 0 and "IPv6 not checked" in err


def test_natlint_system_says_why_it_cannot_read_the_firewall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _system(tmp_path, monkeypatch, None, None)
    assert code == 2 and out == ""
    assert "natlint-system: error: iptables-save is not installed" in err
    denied = ("echo 'iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied"
              " (you must be root)' >&2; exit 4\n")
    code, _, err = _system(tmp_path, monkeypatch, denied, _cat(CLEAN))
    assert code == 2 and "iptables-save is not permitted for this user" in err and "must be root" in err
    code, _, err = _system(tmp_path, monkeypatch, "exit 3\n", _cat(CLEAN))
    assert code == 2 and "iptables-save failed: exit code 3" in err


def test_natlint_system_runs_only_the_listed_commands() -> None:
    from natlint.system import SystemDumpError, read_dump

    with pytest.raises(SystemDumpError, match="refusing"):
        read_dump(("iptables-restore",))
