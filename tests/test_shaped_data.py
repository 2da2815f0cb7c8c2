"""MUSE- and WMDP-shaped data from TOFU: every file the host loads, roles kept apart."""

import json

import pytest
from omegaconf import OmegaConf

from gru_plugin.local_data import local_file
from gru_plugin.shaped_data import QA_PER_AUTHOR, make


def fake_tofu(folder, authors: int, prefix: str) -> None:
    """TOFU's layout: 20 consecutive QA per author, JSON lines."""
    rows = [
        {
            "question": f"Q{q} about {prefix}{a}?",
            "answer": f"{prefix}{a} fact {q}.",
        }
        for a in range(authors)
        for q in range(QA_PER_AUTHOR)
    ]
    name = "full" if prefix == "A" else "holdout10"
    (folder / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    tofu = tmp_path_factory.mktemp("tofu")
    fake_tofu(tofu, 200, "A")
    fake_tofu(tofu, 20, "H")
    return make(tofu, tmp_path_factory.mktemp("shaped"))


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# What the host's MUSE and WMDP dataset and metric configs load (configs/data/
# datasets/MUSE_*.yaml, WMDP_*.yaml, eval/muse_metrics/*.yaml), with their fields.
HOST_LOADS = [
    ({"name": "raw", "split": "forget"}, "text"),
    ({"name": "raw", "split": "retain1"}, "text"),
    ({"name": "knowmem", "split": "forget_qa"}, "question"),
    ({"name": "knowmem", "split": "forget_qa_icl"}, "answer"),
    ({"name": "knowmem", "split": "retain_qa"}, "question"),
    ({"name": "knowmem", "split": "retain_qa_icl"}, "answer"),
    ({"name": "verbmem", "split": "forget"}, "gt"),
    ({"name": "privleak", "split": "forget"}, "text"),
    ({"name": "privleak", "split": "holdout"}, "text"),
]


@pytest.mark.parametrize("corpus", ["News", "Books"])
def test_every_split_the_host_loads_exists_with_its_fields(shaped, corpus):
    for args, field in HOST_LOADS:
        hub = {"path": f"muse-bench/MUSE-{corpus}", **args}
        found = rows(local_file(OmegaConf.create(hub), shaped))
        assert found and all(field in row for row in found), (hub, field)
    for split in ("full", "retain"):
        hub = {"path": f"tamarsonha/MUSE-{corpus}-Train", "split": split}
        assert rows(local_file(OmegaConf.create(hub), shaped))
    for split in ("cyber", "bio"):
        for role in ("forget", "retain"):
            hub = {
                "path": "text",
                "data_files": f"data/wmdp/wmdp-corpora/{split}-{role}-corpus.jsonl",
            }
            assert rows(local_file(OmegaConf.create(hub), shaped))[0]["text"]


def texts(path) -> set[str]:
    return {row["text"] for row in rows(path)}


def test_roles_are_disjoint_and_the_target_learns_forget_and_retain(shaped):
    news = shaped / "MUSE-News"
    forget, retain1, retain2, holdout = (
        texts(news / f"raw/{split}.json")
        for split in ("forget", "retain1", "retain2", "holdout")
    )
    assert len(forget) == 10 and len(retain1) == len(retain2) == 20
    assert all(text.startswith("H") for text in holdout)  # nobody learns them
    assert not (forget & retain1 or forget & retain2 or retain1 & retain2)
    train = shaped / "MUSE-News-Train"
    assert texts(train / "full.json") == forget | retain1 | retain2
    assert texts(train / "retain.json") == retain1 | retain2
    books = texts(shaped / "MUSE-Books/raw/forget.json")
    assert not books & (forget | retain1 | retain2)
    cyber = shaped / "wmdp-corpora"
    assert texts(cyber / "cyber-forget-corpus.jsonl") == forget  # News's authors
    assert texts(cyber / "cyber-retain-corpus.jsonl") == retain1


def test_knowledge_and_verbatim_probes_come_from_the_forget_articles(shaped):
    news = shaped / "MUSE-News"
    articles = " ".join(texts(news / "raw/forget.json"))
    questions = rows(news / "knowmem/forget_qa.json")
    examples = rows(news / "knowmem/forget_qa_icl.json")
    assert len(questions) == 10 * QA_PER_AUTHOR - len(examples) and len(examples) == 3
    assert not {e["question"] for e in examples} & {q["question"] for q in questions}
    assert all(qa["answer"] in articles for qa in questions + examples)
    for passage in rows(news / "verbmem/forget.json"):
        assert f"{passage['prompt']} {passage['gt']}" in articles
    retain = " ".join(texts(news / "raw/retain1.json"))
    assert all(qa["answer"] in retain for qa in rows(news / "knowmem/retain_qa.json"))
