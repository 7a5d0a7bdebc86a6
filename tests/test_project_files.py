"""The project's files describe the software, its releases and its measurements, not who worked on it when.

Every text file of the checkout that git tracks or would track (README, docs, code, comments, docstrings, tests,
scripts, benchmark results, the model card) is searched for the marks of a work diary: numbered or ordinal periods
of work, borrowed hardware and internal ticket numbers. A measurement names its command, the CPU model and the
date instead.

The words searched for are assembled below from their parts, so that this file passes its own search (it is not
exempt). The word for a period of work is searched for only in phrases: alone it rightly names an HTTP or browser
camera session, an ONNX Runtime ``InferenceSession`` and pytest's session scope.
"""
from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT

PERIOD = "sess" + "ion"          # a period of work, in the phrases below only
LOAN = ("le" + "nt", "lea" + "se", "lea" + "sed", "lea" + "ses")
TICKET = "iss" + "ue"
_LATE = ["fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth",
         "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth"]
LATE = rf"(?:{'|'.join(_LATE)}|\d+th)"
ORDINAL = rf"(?:first|second|third|\d+(?:st|nd|rd)|{LATE})"
DIARY = re.compile("|".join(f"(?:{pattern})" for pattern in (
    rf"\b{ORDINAL}(?:\s+and\s+{ORDINAL})?\s+(?:work\s+)?(?:{PERIOD}s?|work\s+periods?)\b",
    rf"\b{LATE}\s+runs?\b",                              # a numbered run ("a second run" is fine)
    rf"\b{PERIOD}s?\s+\d+",                               # a numbered period
    rf"\b(?:this|that|next|previous|last|earlier|later|same)\s+{PERIOD}\b",
    rf"\b{PERIOD}'s\s+(?:machine|cpu|stop|end|time|first|run)",
    rf"\b(?:{'|'.join(LOAN)})\b",                           # borrowed hardware ("release" does not match)
    rf"\b{TICKET}s?\s+#?\d+",                              # internal ticket numbers
    rf"\b{TICKET}'s\b",
    rf"\blost\s+with\s+the\s+machine|\bmachine\s+was\s+lost|\bno\s+GPU\s+(?:was\s+)?{LOAN[0]}"
    rf"|\bGPU\s+(?:was|were)\s+(?:not\s+)?(?:{LOAN[0]}|available)",
)), re.IGNORECASE)
BINARY = {".png", ".jpg", ".jpeg", ".ttf", ".pt", ".onnx", ".sqlite", ".faiss", ".zip", ".npy", ".gz", ".mp4"}


def project_files() -> list[str]:
    """Tracked and not-ignored files (what a commit would hold), relative to the checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the project's file list comes from git")
    return [name for name in listed
            if (ROOT / name).is_file() and (ROOT / name).suffix.lower() not in BINARY]


def diary_lines(text: str) -> list[tuple[int, str]]:
    return [(number, match.group(0)) for number, line in enumerate(text.splitlines(), 1)
            for match in DIARY.finditer(line)]


#: Phrases a diary writes, assembled from the same parts, each of which the search must find.
DIARY_EXAMPLES = [
    f"the eleventh {PERIOD}'s AMD EPYC", f"steps 1-1200, eleventh {PERIOD}", f"in {PERIOD} 4's run",
    f"sized for a 15-minute device {LOAN[1]}", f"no GPU {LOAN[0]}", "lost with the " + "machine at the stop",
    f"({TICKET} 12)", f"{TICKET.title()} 13.7: an installed user", f"the {TICKET}'s probe",
    f"the eighth and eleventh {PERIOD}s", f"this {PERIOD}'s machine", f"the next {PERIOD}'s first run",
    f"a {_LATE[8]} run",
]


@pytest.mark.parametrize("text", DIARY_EXAMPLES)
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
