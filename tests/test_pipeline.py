"""train.pipeline end to end on the tiny model: a feedback.db seeded through the store, export, SFT ->
RM -> DPO, evaluation, a new model version registered that the engine serves; a rerun skips every
stage; config errors are caught before any training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mvp.store import Store
from train import outputs
from train.config import ConfigError, config_from_dict, read_yaml

GOOD_FALLBACK = "听起来这段时间你承受了很多，愿意多说说吗？"
BAD_REPLY = "不知道。"


def seed_feedback_db(path: Path, base_model: str, conversations: int = 12) -> dict:
    """Conversations built from the bundled dialogues, each turn with a good and a bad reply.

    Per turn: the dialogue's own counsellor reply (rated 5) and a curt alternative (rated 1), compared
    by a clinician (good wins); every third good reply also gets a rewrite. Returns the ids used.
    """
    from train.demo.tiny_lm import iter_dialogues

    s = Store(path)
    s.add_user("li", "password-li-123", "clinician")
    s.add_user("wang", "password-wang-123", "clinician")
    base_version = s.register_model_version(base_model, quantization="none", label="base")
    dialogues = [d for d in iter_dialogues() if len(d["messages"]) >= 4][:conversations]
    replies = 0
    for i, dialogue in enumerate(dialogues):
        conv = s.create_conversation("li" if i % 2 else "wang", "intake", base_version)
        for turn in range(2):
            user = dialogue["messages"][2 * turn]["content"][:120]
            good = dialogue["messages"][2 * turn + 1]["content"][:120] or GOOD_FALLBACK
            u = s.add_user_message(conv, user)
            a = s.add_assistant_message(conv, u, good)
            b = s.add_assistant_message(conv, u, BAD_REPLY, make_active=False)
            s.add_rating(a, "li", overall=5, rewrite=(good + "我们可以一起慢慢梳理。") if replies % 3 == 0 else None)
            s.add_rating(b, "li", overall=1)
            s.add_comparison(a, b, "a", "wang", shown_left=a, activate_choice=False)
            replies += 1
    return {"base_version": base_version, "replies": replies}


def write_config(tmp_path: Path, tiny_model_dir: Path, db: Path, **overrides) -> Path:
    config = {
        "db": str(db),
        "base_model": str(tiny_model_dir),
        "quantization": "none",
        "device": "cpu",
        "run_dir": str(tmp_path / "run"),
        "stages": ["sft", "rm", "dpo"],
        "export": {"eval_fraction": 0.3, "seed": 1, "scrub": False},  # the seed has no personal data
        "sft": {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 256, "logging_steps": 1},
        "rm": {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 256, "logging_steps": 1},
        "dpo": {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 256, "logging_steps": 1},
        "evaluate": {"max_samples": 4, "max_new_tokens": 8, "max_length": 1024},
        "gate": {"max_items": 4, "max_new_tokens": 4},  # the fixed set, cut down for speed
        **overrides,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, tiny_model_dir):
    """One pipeline run, shared: (tmp folder, db path, config path, summary, seconds)."""
    import time

    from train.pipeline import main

    tmp = tmp_path_factory.mktemp("pipeline")
    db = tmp / "feedback.db"
    seeded = seed_feedback_db(db, str(tiny_model_dir))
    config = write_config(tmp, tiny_model_dir, db)
    started = time.monotonic()
    assert main(["--config", str(config)]) == 0
    seconds = time.monotonic() - started
    summary = json.loads((tmp / "run" / "pipeline.json").read_text(encoding="utf-8"))
    return {"tmp": tmp, "db": db, "config": config, "summary": summary, "seconds": seconds, "seeded": seeded}


def test_pipeline_registers_a_version_the_engine_serves(pipeline_run):
    from mvp.model.engine import Engine, GenerationParams
    from mvp.model.loader import ModelSpec, load_model

    summary = pipeline_run["summary"]
    assert summary["stages"] == {"sft": "ran", "rm": "ran", "dpo": "ran"}
    versions = Store(pipeline_run["db"]).list_model_versions()
    assert len(versions) == 2
    new = versions[-1]
    assert new["id"] == summary["version_id"]
    assert new["parent_id"] == pipeline_run["seeded"]["base_version"]
    assert new["created_at"]
    assert Path(new["adapter"]).is_absolute() and (Path(new["adapter"]) / "adapter_config.json").is_file()
    # data manifest and metrics travel with the version
    assert new["data_manifest"]["counts"]["dpo"]["total"] > 0
    assert set(new["data_manifest"]["files"]) >= {"trl/dpo_train.jsonl", "trl/sft_train.jsonl"}
    for side in ("new", "parent"):
        assert new["metrics"][side]["perplexity"] > 0
        assert 0 <= new["metrics"][side]["preference_accuracy"] <= 1
        assert isinstance(new["metrics"][side]["reward_score"], float)
    assert 0 <= new["metrics"]["implicit_preference_accuracy"] <= 1
    assert new["metrics"]["reward_score_kind"] == "in-run"
    # the release gate ran on the fixed set: the status follows its decision, with the figures
    assert new["release"]["decision"] in ("promote", "refuse")
    assert new["status"] == ("servable" if new["release"]["decision"] == "promote" else "refused")
    assert summary["status"] == new["status"] and summary["release"]["decision"] == new["release"]["decision"]
    assert (summary["serve"] is None) == (new["status"] == "refused")
    assert new["release"]["benchmark"]["new"]["dialogue_items"] == 4
    eval_json = json.loads((pipeline_run["tmp"] / "run" / "eval.json").read_text(encoding="utf-8"))
    assert eval_json["release"]["decision"] == new["release"]["decision"]
    assert {c["name"] for c in eval_json["release"]["checks"]} == {"gold_nll", "screen_pass", "crisis_pass"}
    # the adapter folder carries its config and the data manifest it was trained on
    info = json.loads((Path(new["adapter"]) / outputs.TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
    assert info["stage"] == "dpo:dpo"
    assert info["resolved"]["continued_adapter"].endswith("sft")  # DPO continued the SFT adapter
    assert (Path(new["adapter"]) / outputs.DATA_MANIFEST_FILE).is_file()
    # the app loads a version exactly this way (app.version_loader)
    loaded = load_model(ModelSpec(model=new["base_model"], adapter=new["adapter"],
                                  quantization=new["quantization"]))
    reply = Engine(loaded).generate([{"role": "user", "content": "我最近总是睡不着。"}],
                                    GenerationParams(temperature=0, max_new_tokens=8))
    assert isinstance(reply.text, str) and reply.new_tokens > 0


def test_rerun_skips_done_stages_and_force_reruns(pipeline_run, capsys):
    import time

    from train.pipeline import main

    started = time.monotonic()
    assert main(["--config", str(pipeline_run["config"])]) == 0
    rerun_s = time.monotonic() - started
    summary = json.loads((pipeline_run["tmp"] / "run" / "pipeline.json").read_text(encoding="utf-8"))
    assert summary["stages"] == {"sft": "skipped", "rm": "skipped", "dpo": "skipped"}
    assert summary["version_id"] == pipeline_run["summary"]["version_id"]  # same adapter, same version
    assert len(Store(pipeline_run["db"]).list_model_versions()) == 2
    assert rerun_s < pipeline_run["seconds"]
    # a changed stage config reruns that stage and what depends on it, and registers a new version
    config = yaml.safe_load(pipeline_run["config"].read_text(encoding="utf-8"))
    config["dpo"]["beta"] = 0.2
    config["parent"] = str(pipeline_run["seeded"]["base_version"])
    config["continue_parent_adapter"] = False
    changed = pipeline_run["tmp"] / "changed.yaml"
    changed.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert main(["--config", str(changed)]) == 0
    summary = json.loads((pipeline_run["tmp"] / "run" / "pipeline.json").read_text(encoding="utf-8"))
    assert summary["stages"] == {"sft": "skipped", "rm": "skipped", "dpo": "ran"}
    assert summary["version_id"] != pipeline_run["summary"]["version_id"]
    assert len(Store(pipeline_run["db"]).list_model_versions()) == 3
    # the first version's adapter folder is untouched (versions/ is content-addressed)
    assert Path(pipeline_run["summary"]["adapter"], "adapter_model.safetensors").is_file()


def test_force_reruns_every_stage(pipeline_run, tmp_path, tiny_model_dir):
    from train.pipeline import main

    config = yaml.safe_load(pipeline_run["config"].read_text(encoding="utf-8"))
    config["stages"] = ["sft"]
    config["register"] = False
    config["evaluate"]["reward_model"] = None
    path = tmp_path / "sft_only.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert main(["--config", str(path), "--force"]) == 0
    summary = json.loads((pipeline_run["tmp"] / "run" / "pipeline.json").read_text(encoding="utf-8"))
    assert summary["stages"] == {"sft": "ran"} and summary["version_id"] is None


def test_typo_in_a_late_stage_fails_before_training(tmp_path, tiny_model_dir, capsys):
    from train.pipeline import main

    db = tmp_path / "feedback.db"
    Store(db)
    config = write_config(tmp_path, tiny_model_dir, db, dpo={"max_step": 2})
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "max_step" in err and "max_steps" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, key", [
    ({"stages": ["sft", "ppo"]}, "ppo"),
    ({"stages": ["rm"]}, "stages"),
    ({"stages": ["sft", "rl"]}, "rl"),
    ({"sft": {"output_dir": "x"}}, "sft.output_dir"),
    ({"export": {"eval_frac": 0.2}}, "eval_frac"),
    ({"evaluate": {"max_sample": 3}}, "max_sample"),
    ({"stagez": ["sft"]}, "stagez"),
])
def test_bad_pipeline_configs_name_the_key(tmp_path, tiny_model_dir, capsys, overrides, key):
    from train.pipeline import main

    config = write_config(tmp_path, tiny_model_dir, tmp_path / "feedback.db", **overrides)
    assert main(["--config", str(config)]) == 2
    assert key in capsys.readouterr().err


def test_empty_database_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    from train.pipeline import main

    db = tmp_path / "feedback.db"
    Store(db).register_model_version(str(tiny_model_dir), quantization="none")
    config = write_config(tmp_path, tiny_model_dir, db)
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "导出失败" in err
    assert len(Store(db).list_model_versions()) == 1


def test_missing_database_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    from train.pipeline import main

    config = write_config(tmp_path, tiny_model_dir, tmp_path / "nope.db")
    assert main(["--config", str(config)]) == 2
    assert "nope.db" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_demo_config_is_valid():
    """train/configs/demo.yaml parses (every section checked) without touching the model or the db."""
    from train.pipeline import PipelineConfig

    demo = Path(__file__).resolve().parent.parent / "train" / "configs" / "demo.yaml"
    cfg = config_from_dict(PipelineConfig, read_yaml(demo), source=str(demo))
    assert cfg.base_model == "demo" and cfg.device == "cpu"
    assert cfg.stages[0] in ("pt", "sft")


def test_time_budget_is_shared_among_the_remaining_stages(monkeypatch):
    from train import pipeline

    cfg = config_from_dict(pipeline.PipelineConfig, {"time_budget_s": 360, "stages": ["sft", "rm", "dpo"]})
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: 1000.0)
    # 360 s - 60 s kept for the evaluation = 300 s for 3 stages, minus each stage's load/save overhead
    assert pipeline.stage_share(cfg, 1000.0, 3, None) == 100 - pipeline.STAGE_OVERHEAD_S
    assert pipeline.stage_share(cfg, 1000.0, 3, 30.0) == 30.0  # a stage's own smaller budget wins
    assert pipeline.stage_share(cfg, 1000.0 - 290, 1, None) == pipeline.MIN_STAGE_TRAIN_S  # late: a minimum
    with pytest.raises(ConfigError, match="time_budget_s"):
        config_from_dict(pipeline.PipelineConfig, {"time_budget_s": 30})


def test_promote_anyway_is_recorded_by_the_pipeline(pipeline_run, capsys):
    from train.pipeline import main

    assert main(["--config", str(pipeline_run["config"]), "--promote-anyway", "先给临床团队盲评"]) == 0
    new = Store(pipeline_run["db"]).get_model_version(pipeline_run["summary"]["version_id"])
    assert new["status"] == "servable" and new["release"]["override"]["reason"] == "先给临床团队盲评"
    summary = json.loads((pipeline_run["tmp"] / "run" / "pipeline.json").read_text(encoding="utf-8"))
    assert summary["release"]["override"]["reason"] == "先给临床团队盲评" and summary["serve"]
    assert main(["--config", str(pipeline_run["config"]), "--promote-anyway", " "]) == 2
    assert "理由" in capsys.readouterr().err


def test_small_eval_split_is_warned_about(pipeline_run):
    manifest = json.loads((pipeline_run["tmp"] / "run" / "export" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["split"]["eval_conversations"] >= 4  # 30 % of 12 and the minimum of 5 (at most half)
    assert any("噪声" in w for w in manifest["warnings"])  # 12 conversations: far too few to mean anything
    new = Store(pipeline_run["db"]).get_model_version(pipeline_run["summary"]["version_id"])
    assert new["metrics"]["eval_warnings"] == manifest["warnings"]


def test_empty_eval_split_registers_without_evaluation(tmp_path, tiny_model_dir):
    from train.pipeline import main

    db = tmp_path / "feedback.db"
    seed_feedback_db(db, str(tiny_model_dir), conversations=3)
    config = write_config(tmp_path, tiny_model_dir, db, stages=["sft"],
                          export={"eval_fraction": 0.0, "min_eval_conversations": 0, "scrub": False},
                          sft={"max_steps": 1, "max_length": 256})
    assert main(["--config", str(config)]) == 0
    new = Store(db).list_model_versions()[-1]
    assert new["metrics"]["evaluation_skipped"] and new["adapter"]
