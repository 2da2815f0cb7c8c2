"""MUSE- and WMDP-shaped data made from TOFU, for runs without the hub.

    python -m gru_plugin.shaped_data --tofu TOFU_DIR --out DIR

MUSE (news articles, QA about them, verbatim passages) and WMDP (plain-text
corpora) cannot be downloaded here, and a tiny model could not learn them anyway.
TOFU's fictitious authors have 20 QA each, and an author's 20 answers in order
read as a short biography: that is our article. From TOFU's ``full`` and
``holdout10`` sets this writes, in the folder layout ``gru_plugin.local_data``
reads (``--data-dir``), every split the host's MUSE and WMDP configs load, with
their field names:

- ``MUSE-{News,Books}/raw/{forget,retain1,retain2,holdout}.json`` (``text``): the
  forget, two retain and unseen (holdout) authors' articles;
- ``MUSE-{News,Books}/knowmem/{forget_qa,retain_qa}{,_icl}.json``
  (``question``/``answer``): TOFU's own QA about the forget and retain1 authors,
  a few of them set apart as the in-context examples;
- ``MUSE-{News,Books}/verbmem/forget.json`` (``prompt``/``gt``): the start of each
  forget article and its continuation;
- ``MUSE-{News,Books}/privleak/{forget,retain,holdout}.json`` (``text``);
- ``MUSE-{News,Books}-Train/{full,retain}.json``: what the target and the retain
  model learn (forget + retain1 + retain2, and retain1 + retain2);
- ``wmdp-corpora/{cyber,bio}-{forget,retain}-corpus.jsonl``: one ``{"text": ...}``
  per line, as the real corpora (the host reads them with the ``text`` builder).

News and Books use disjoint authors, so a run on one says nothing about the other.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

QA_PER_AUTHOR = 20
"""TOFU's layout: each author's 20 QA are consecutive in every split."""
ICL_EXAMPLES = 3
"""In-context examples of knowmem's ``*_icl`` splits (prepended to each question)."""
VERBMEM_PROMPT_ANSWERS = 4
"""A verbmem prompt is an article's first answers; its ``gt`` the next ones."""
VERBMEM_GT_ANSWERS = 4

Author = list[dict[str, str]]
"""One author's QA, in TOFU's order."""


@dataclass(frozen=True)
class MuseCorpus:
    """Which TOFU authors (indices into ``full``) play which MUSE role."""

    name: str
    forget: range
    retain1: range
    retain2: range
    holdout: range  # indices into holdout10: authors no model ever learns


MUSE_CORPORA = (
    MuseCorpus("MUSE-News", range(190, 200), range(0, 20), range(20, 40), range(10)),
    MuseCorpus(
        "MUSE-Books", range(180, 190), range(40, 60), range(60, 80), range(10, 20)
    ),
)
WMDP_CORPORA = {
    # data_split: (forget authors, retain authors), indices into full
    "cyber": (range(190, 200), range(0, 20)),
    "bio": (range(180, 190), range(40, 60)),
}


def read_tofu(path: Path) -> list[dict[str, str]]:
    """A TOFU json file: a JSON array or JSON lines (the hub's files are both)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def authors(records: Sequence[dict[str, str]]) -> list[Author]:
    """Group consecutive QA by author; TOFU has exactly 20 per author."""
    if len(records) % QA_PER_AUTHOR:
        raise ValueError(f"{len(records)} QA are not {QA_PER_AUTHOR} per author")
    return [
        list(records[start : start + QA_PER_AUTHOR])
        for start in range(0, len(records), QA_PER_AUTHOR)
    ]


def article(author: Author) -> str:
    """An author's answers in order: a short biography."""
    return " ".join(qa["answer"] for qa in author)


def write_rows(path: Path, rows: Sequence[dict]) -> None:
    """JSON lines, the format ``load_dataset("json")`` and the text builder read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def texts(pool: Sequence[Author], indices: range) -> list[dict[str, str]]:
    return [{"text": article(pool[i])} for i in indices]


def knowmem(pool: Sequence[Author], indices: range) -> tuple[list, list]:
    """(questions, in-context examples): each author's QA, the first few set apart."""
    qa = [
        {"question": item["question"], "answer": item["answer"]}
        for i in indices
        for item in pool[i]
    ]
    return qa[ICL_EXAMPLES:], qa[:ICL_EXAMPLES]


def verbmem(pool: Sequence[Author], indices: range) -> list[dict[str, str]]:
    """Two passages per author: a prompt of some answers and the ones that follow."""
    rows = []
    span = VERBMEM_PROMPT_ANSWERS + VERBMEM_GT_ANSWERS
    for i in indices:
        answers = [qa["answer"] for qa in pool[i]]
        for start in (0, QA_PER_AUTHOR - span):
            middle = start + VERBMEM_PROMPT_ANSWERS
            rows.append(
                {
                    "prompt": " ".join(answers[start:middle]),
                    "gt": " ".join(answers[middle : start + span]),
                }
            )
    return rows


def write_muse(out: Path, corpus: MuseCorpus, full: list, holdout: list) -> None:
    """Every split the host's MUSE data and metric configs load for ``corpus``."""
    root = out / corpus.name
    forget, retain1 = texts(full, corpus.forget), texts(full, corpus.retain1)
    retain2, unseen = texts(full, corpus.retain2), texts(holdout, corpus.holdout)
    for split, rows in {
        "raw/forget": forget,
        "raw/retain1": retain1,
        "raw/retain2": retain2,
        "raw/holdout": unseen,
        "privleak/forget": forget,
        "privleak/retain": retain1,
        "privleak/holdout": unseen,
        "verbmem/forget": verbmem(full, corpus.forget),
    }.items():
        write_rows(root / f"{split}.json", rows)
    for role, indices in (("forget", corpus.forget), ("retain", corpus.retain1)):
        questions, examples = knowmem(full, indices)
        write_rows(root / f"knowmem/{role}_qa.json", questions)
        write_rows(root / f"knowmem/{role}_qa_icl.json", examples)
    train = out / f"{corpus.name}-Train"
    write_rows(train / "full.json", forget + retain1 + retain2)
    write_rows(train / "retain.json", retain1 + retain2)


def write_wmdp(out: Path, full: list) -> None:
    """``<split>-{forget,retain}-corpus.jsonl`` as the host's WMDP configs name them."""
    for split, (forget, retain) in WMDP_CORPORA.items():
        for role, indices in (("forget", forget), ("retain", retain)):
            write_rows(
                out / "wmdp-corpora" / f"{split}-{role}-corpus.jsonl",
                texts(full, indices),
            )


def make(tofu_dir: Path, out: Path) -> Path:
    """Write the MUSE- and WMDP-shaped data from ``tofu_dir`` into ``out``."""
    full = authors(read_tofu(tofu_dir / "full.json"))
    holdout = authors(read_tofu(tofu_dir / "holdout10.json"))
    for corpus in MUSE_CORPORA:
        write_muse(out, corpus, full, holdout)
    write_wmdp(out, full)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu", type=Path, required=True, help="TOFU json files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(f"wrote MUSE- and WMDP-shaped data to {make(args.tofu, args.out)}")


if __name__ == "__main__":
    main()
