"""Local TOFU json files replace every hub dataset node, however deep."""

import pytest
from omegaconf import OmegaConf

from gru_plugin.local_data import local_data_overrides

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
                "other": {"args": {"hf_args": {"path": "muse-bench/MUSE-News"}}},
            }
        }
    },
}


def test_every_tofu_node_is_redirected(tmp_path):
    for name in ("forget01", "holdout01"):
        (tmp_path / f"{name}.json").write_text("{}\n")
    overrides = local_data_overrides(OmegaConf.create(CFG), tmp_path)
    deep = "eval.tofu.metrics.m.pre_compute.p.datasets.X.args"
    assert overrides == [
        "data.forget.TOFU_QA_forget.args.hf_args.path=json",
        f"+data.forget.TOFU_QA_forget.args.hf_args.data_files={tmp_path}/forget01.json",
        f"{deep}.hf_args.path=json",
        f"+{deep}.hf_args.data_files={tmp_path}/holdout01.json",
    ]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="forget01.json does not exist"):
        local_data_overrides(OmegaConf.create(CFG), tmp_path)
