"""Local copies replace every hub dataset node (TOFU, MUSE, WMDP), however deep."""

import pytest
from omegaconf import OmegaConf

from gru_plugin.local_data import WMDP_CORPORA, local_data_overrides

CFG = {
    "forget_split": "forget01",
    "data": {
        "forget": {
            "TOFU_QA_forget": {
                "args": {
                    "hf_args": {"path": "locuslab/TOFU", "name": "${forget_split}"}
                }
            }
        }
    },
    "eval": {
        "tofu": {
            "metrics": {
                "m": {
                    "pre_compute": {
                        "p": {
                            "datasets": {
                                "X": {
                                    "args": {
                                        "hf_args": {
                                            "path": "locuslab/TOFU",
                                            "name": "holdout01",
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
                "other": {"args": {"hf_args": {"path": "someone/else"}}},
            }
        }
    },
}


def test_every_tofu_node_is_redirected(tmp_path):
    for name in ("forget01", "holdout01"):
        (tmp_path / f"{name}.json").write_text("{}\n")
    overrides = local_data_overrides(OmegaConf.create(CFG), tmp_path)
    deep = "eval.tofu.metrics.m.pre_compute.p.datasets.X.args.hf_args"
    forget = "data.forget.TOFU_QA_forget.args.hf_args"
    assert overrides == [
        f"{forget}.path=json",
        f"++{forget}.data_files={tmp_path}/forget01.json",
        f"++{forget}.split=train",  # the node had none
        f"{deep}.path=json",
        f"++{deep}.data_files={tmp_path}/holdout01.json",
        f"++{deep}.split=train",
    ]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="forget01.json does not exist"):
        local_data_overrides(OmegaConf.create(CFG), tmp_path)


MUSE_AND_WMDP = {
    "data_split": "News",
    "data": {
        "forget": {
            "MUSE_forget": {
                "args": {
                    "hf_args": {
                        "path": "muse-bench/MUSE-${data_split}",
                        "name": "raw",
                        "split": "forget",
                    }
                }
            },
            "WMDP_forget": {
                "args": {
                    "hf_args": {
                        "path": "text",
                        "data_files": f"{WMDP_CORPORA}cyber-forget-corpus.jsonl",
                        "split": "train",
                    }
                }
            },
        },
        "train": {
            "MUSE_train": {
                "args": {
                    "hf_args": {"path": "tamarsonha/MUSE-News-Train", "split": "full"}
                }
            }
        },
    },
    "eval": {
        "muse": {
            "metrics": {
                "forget_knowmem_ROUGE": {
                    "datasets": {
                        "MUSE_forget_knowmem": {
                            "args": {
                                "hf_args": {
                                    "path": "muse-bench/MUSE-News",
                                    "name": "knowmem",
                                    "split": "forget_qa",
                                },
                                "few_shot_dataset_hf_args": {
                                    "path": "muse-bench/MUSE-News",
                                    "name": "knowmem",
                                    "split": "forget_qa_icl",
                                },
                            }
                        }
                    }
                }
            }
        }
    },
    "elsewhere": {"args": {"hf_args": {"path": "text", "data_files": "mine.jsonl"}}},
}


def test_muse_and_wmdp_nodes_read_the_local_layout(tmp_path):
    files = [
        "MUSE-News/raw/forget.json",
        "MUSE-News/knowmem/forget_qa.json",
        "MUSE-News/knowmem/forget_qa_icl.json",
        "MUSE-News-Train/full.json",
        "wmdp-corpora/cyber-forget-corpus.jsonl",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    overrides = local_data_overrides(OmegaConf.create(MUSE_AND_WMDP), tmp_path)
    knowmem = "eval.muse.metrics.forget_knowmem_ROUGE.datasets.MUSE_forget_knowmem.args"

    def json_file(node: str, name: str) -> list[str]:
        return [
            f"{node}.path=json",
            f"++{node}.data_files={tmp_path}/{name}",
            f"++{node}.split=train",
        ]

    assert overrides == [
        *json_file("data.forget.MUSE_forget.args.hf_args", files[0]),
        # WMDP keeps the host's text builder; only the file moves.
        "data.forget.WMDP_forget.args.hf_args.data_files="
        f"{tmp_path}/wmdp-corpora/cyber-forget-corpus.jsonl",
        *json_file("data.train.MUSE_train.args.hf_args", files[3]),
        *json_file(f"{knowmem}.hf_args", files[1]),
        *json_file(f"{knowmem}.few_shot_dataset_hf_args", files[2]),
    ]  # and a text corpus of the user's own ("elsewhere") is left alone


def test_missing_muse_file_names_the_split_and_the_maker(tmp_path):
    with pytest.raises(FileNotFoundError, match="raw forget.*gru_plugin.shaped_data"):
        local_data_overrides(OmegaConf.create(MUSE_AND_WMDP), tmp_path)
