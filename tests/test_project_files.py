"""The project's files describe the software, its releases and its measurements, not who worked on it when.

Every text file of the checkout that git tracks or would track (README, docs, code, comments, docstrings, tests,
scripts, benchmark results, the model card) is searched for the marks of a work diary: ordinal work periods
("the eleventh session", "session 4's run"), hardware loans ("lent", "lease", "lost with the machine") and internal
issue numbers ("issue 12", "the issue's probe"). A measurement names its command, the CPU model and the date.

"session" alone is not searched for: it rightly names an HTTP or browser camera session, an ONNX Runtime
``InferenceSession`` and pytest's session scope. Only the phrases above, which mean a period of work, are refused.
"""
from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT

_LATE = (r"(?:fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth"
         r"|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|\d+th)")
_ORDINAL = rf"(?:first|second|third|\d+(?:st|nd|rd)|{_LATE})"
DIARY = re.compile("|".join(f"(?:{pattern})" for pattern in (
    rf"\b{_ORDINAL}(?:\s+and\s+{_ORDINAL})?\s+(?:work\s+)?(?:sessions?|work\s+periods?)\b",
    rf"\b{_LATE}\s+runs?\b",                                   # "the twelfth run" ("a second run" is fine)
    r"\bsessions?\s+\d+",                                      # "session 4's run", "sessions 4-11"
    r"\b(?:this|that|next|previous|last|earlier|later|same)\s+session\b",
    r"\bsession's\s+(?:machine|cpu|stop|end|time|first|run)",  # "that session's CPU"
    r"\b(?:lent|leases?|leased)\b",                            # hardware loans ("release" does not match)
    r"\bissues?\s+#?\d+",                                      # internal issue numbers
    r"\bissue's\b",
    (r"\blost\s+with\s+the\s+machine|\bmachine\s+was\s+lost|\bno\s+GPU\s+(?:was\s+)?lent"
     r"|\bGPU\s+(?:was|were)\s+(?:not\s+)?(?:lent|available)"),
)), re.IGNORECASE)
#: This file quotes the phrases it refuses.
OWN = "tests/test_project_files.py"
BINARY = {".png", ".jpg", ".jpeg", ".ttf", ".pt", ".onnx", ".sqlite", ".faiss", ".zip", ".npy", ".gz", ".mp4"}


def project_files() -> list[str]:
    """Tracked and not-ignored files (what a commit would hold), relative to the checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the project's file list comes from git")
    return [name for name in listed
            if name != OWN and (ROOT / name).is_file() and (ROOT / name).suffix.lower() not in BINARY]


def diary_lines(text: str) -> list[tuple[int, str]]:
    return [(number, match.group(0)) for number, line in enumerate(text.splitlines(), 1)
            for match in DIARY.finditer(line)]


@pytest.mark.parametrize("text", [
    "the eleventh session's AMD EPYC", "steps 1-1200, eleventh session", "in session 4's run",
    "sized for a 15-minute device lease", "no GPU lent", "lost with the machine at the stop",
    "(issue 12)", "Issue 13.7: an installed user", "the issue's probe", "the eighth and eleventh sessions",
    "this session's machine", "the next session's first run", "a twelfth run",
])
def test_diary_phrases_are_found(text):
    assert diary_lines(text), text


@pytest.mark.parametrize("text", [
    "POST /api/live/{session}/frames", "ort.InferenceSession(path)", "@pytest.fixture(scope='session')",
    "each browser session has its own tracker", "frames of the same camera session", "writer.release()",
    "the release before", "python -m facegnet.train.release", "measured on a 2-core AMD EPYC, 2026-12-04",
    "released the GIL", "first run of the export", "make_session(path, threads=1)",
])
def test_software_words_are_not_diary(text):
    assert not diary_lines(text), text


def test_project_files_keep_no_diary():
    found = []
    for name in project_files():
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{name}:{number}: {phrase!r}" for number, phrase in diary_lines(text)]
    assert not found, "a work diary in the project's files (say what the software does or what was measured, " \
        "with its command, CPU and date):\n" + "\n".join(found)
