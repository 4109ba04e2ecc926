"""train.export: a feedback.db seeded through the store's own API, exported, every row checked.

The seed (`seed_db`) is small enough to know every expected pair and label by hand; the comments in
it say what each part is for. One export with default options is shared by most tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvp.counsel.stages import load_stages
from mvp.store import Store, passwords
from train import export as export_mod
from train import formats
from train.export import ExportOptions, export

STAGES = load_stages()
INTAKE = STAGES.get("intake").instruction
INTERVENTION = STAGES.get("intervention").instruction
PHONE, NAME, DELETED_PHONE = "13812345678", "张伟", "13900001111"
CRISIS_PREAMBLE = "如果你此刻有危险，请拨打 12356 或 120。\n\n"
CRISIS_TEXT = "谢谢你愿意告诉我，你现在安全吗？"
UNSAFE_ORIGINAL = "你可以试试（不安全的内容）。"


def seed_db(path: Path) -> dict[str, int]:
    """Seven conversations that exercise every rule; returns the ids the tests refer to."""
    s = Store(path)
    ids: dict[str, int] = {}
    for name, role in (("li", "clinician"), ("wang", "clinician"), ("boss", "admin"),
                       ("old", "clinician"), ("guest", "demo")):
        s.add_user(name, f"password-{name}", role)
    mv1 = ids["mv1"] = s.register_model_version("models/demo", label="demo v1")
    mv2 = ids["mv2"] = s.register_model_version("models/demo", adapter="runs/a1", label="a1")

    # C1: PII, alternatives rated by several raters (revisions; a disabled rater), a rewrite.
    c1 = ids["c1"] = s.create_conversation("li", "intake", mv1)
    u = s.add_user_message(c1, f"我最近总是睡不着。我叫{NAME}，手机{PHONE}。")
    a11 = ids["a11"] = s.add_assistant_message(c1, u, f"{NAME}，听起来你最近很辛苦，能多说说吗？")
    a11b = ids["a11b"] = s.add_assistant_message(c1, u, "早点睡就好了。", make_active=False)
    s.add_rating(a11, "li", overall=2)
    s.add_rating(a11, "li", overall=5)  # revision 2 counts
    s.add_rating(a11, "wang", overall=4)  # mean 4.5
    s.add_rating(a11, "old", overall=1)  # disabled below
    s.set_thumb(a11, "old", -1)
    s.add_rating(a11b, "li", overall=1)
    s.add_rating(a11b, "wang", overall=2)  # mean 1.5: gap 3 -> score pair a11 > a11b
    u = s.add_user_message(c1, "工作压力很大，老板总是批评我。")
    a12 = ids["a12"] = s.add_assistant_message(c1, u, "嗯。")
    s.add_rating(a12, "li", overall=3, rewrite="被老板批评一定很难受。这种情况持续多久了？")
    s.add_rating(a12, "wang", overall=2, rewrite="旧的改写，已被修订")
    s.add_rating(a12, "wang", overall=2)  # the latest revision has no rewrite: the old one is gone
    aid = s.start_assessment(c1, "phq9")
    s.record_item(aid, 1, "做事时提不起劲或没有兴趣", f"几乎每天都这样，我叫{NAME}", 3, "rules")
    s.record_item(aid, 2, "感到心情低落、沮丧或绝望", "好几天吧", 1, "rules")
    s.correct_item(aid, 1, 2, "li")
    s.finish_assessment(aid, 3, "minimal")

    # C2: blind comparisons: agreement (with a superseded vote and a tie vote), conflict, tie/both_bad.
    c2 = ids["c2"] = s.create_conversation("wang", "assessment", mv1)
    u = s.add_user_message(c2, "我和室友总是吵架。")
    x = ids["x"] = s.add_assistant_message(c2, u, "和室友吵架一定让你很烦恼。", model_version_id=mv1)
    y = ids["y"] = s.add_assistant_message(c2, u, "你们为什么吵架？", model_version_id=mv2, make_active=False)
    s.add_comparison(x, y, "b", "li", shown_left=x, activate_choice=False)
    s.add_comparison(x, y, "a", "li", shown_left=y, activate_choice=False)  # li changed their mind
    s.add_comparison(y, x, "b", "wang", shown_left=y, activate_choice=False)  # x again
    s.add_comparison(x, y, "tie", "boss", shown_left=x, activate_choice=False)
    s.add_comparison(x, y, "b", "old", shown_left=x, activate_choice=False)  # disabled rater
    s.set_thumb(y, "li", 1)  # thumb only -> KTO true
    u = s.add_user_message(c2, "他总是很晚回来还很吵。")
    p = ids["p"] = s.add_assistant_message(c2, u, "这确实会影响你的休息。", model_version_id=mv1)
    q = s.add_assistant_message(c2, u, "你可以和他谈谈。", model_version_id=mv2, make_active=False)
    s.add_comparison(p, q, "a", "li", shown_left=p, activate_choice=False)
    s.add_comparison(p, q, "b", "wang", shown_left=q, activate_choice=False)  # conflict
    s.add_rating(p, "li", tags=["过长"])  # no overall score
    u = s.add_user_message(c2, "我该怎么办？")
    r = ids["r"] = s.add_assistant_message(c2, u, "我们可以一起想想办法。", model_version_id=mv1)
    sid = s.add_assistant_message(c2, u, "搬走吧。", model_version_id=mv2, make_active=False)
    s.add_comparison(r, sid, "tie", "li", shown_left=r, activate_choice=False)
    s.add_comparison(r, sid, "both_bad", "wang", shown_left=sid, activate_choice=False)
    s.set_thumb(r, "li", 1)
    s.set_thumb(r, "wang", -1)  # cancels out
    s.set_thumb(sid, "wang", 1)
    s.set_thumb(sid, "wang", 0)  # cleared

    # C3: a stage change, a crisis reply (preamble), a blocked reply and its better alternative.
    c3 = ids["c3"] = s.create_conversation("li", "intake", mv1)
    u = s.add_user_message(c3, "最近心情不好。")
    a31 = ids["a31"] = s.add_assistant_message(c3, u, "愿意和我说说吗？")
    s.add_rating(a31, "li", overall=5)
    s.set_stage(c3, "intervention")
    u = s.add_user_message(c3, "我总觉得自己什么都做不好。")
    a32 = ids["a32"] = s.add_assistant_message(c3, u, "这个想法出现时，有什么证据支持它？")
    s.add_rating(a32, "li", overall=5)
    u = s.add_user_message(c3, "有时候真的不想活了。")
    a33 = ids["a33"] = s.add_assistant_message(
        c3, u, CRISIS_PREAMBLE + CRISIS_TEXT,
        safety={"categories": ["suicide"], "evidence": ["不想活了"], "preamble": True, "blocked": False,
                "reasons": [], "original": None, "preamble_chars": len(CRISIS_PREAMBLE)})
    s.add_rating(a33, "li", overall=4)
    u = s.add_user_message(c3, "那我该怎么办")
    a34 = ids["a34"] = s.add_assistant_message(
        c3, u, "我们先关注你此刻的安全。", status="blocked",
        safety={"categories": [], "evidence": [], "preamble": False, "blocked": True,
                "reasons": ["method_details"], "original": UNSAFE_ORIGINAL})
    a34b = ids["a34b"] = s.add_assistant_message(c3, u, "我很担心你，我们先谈谈你现在是否安全。", make_active=False)
    s.add_rating(a34, "li", overall=1)
    s.add_rating(a34b, "li", overall=5)

    # C4: an unrated reply before an approved one.
    c4 = ids["c4"] = s.create_conversation("wang", "intake", mv1)
    u = s.add_user_message(c4, "我失恋了。")
    s.add_assistant_message(c4, u, "嗯嗯。")
    u = s.add_user_message(c4, "很难过。")
    a42 = ids["a42"] = s.add_assistant_message(c4, u, "失恋的痛苦是真实的，你愿意说说你们的故事吗？")
    s.add_rating(a42, "wang", overall=5)

    # C5: a stage that is no longer in the stages file.
    c5 = ids["c5"] = s.create_conversation("li", "retired_stage", mv1)
    u = s.add_user_message(c5, "你好")
    s.add_rating(s.add_assistant_message(c5, u, "你好呀"), "li", overall=5)

    # C6: demo conversation; C7: deleted conversation.
    c6 = ids["c6"] = s.create_conversation("li", "intake", mv1, is_demo=True)
    u = s.add_user_message(c6, "演示消息")
    s.add_rating(s.add_assistant_message(c6, u, "演示回复"), "li", overall=5)
    c7 = s.create_conversation("li", "intake", mv1)
    u = s.add_user_message(c7, f"这是要删除的对话，电话{DELETED_PHONE}")
    s.add_rating(s.add_assistant_message(c7, u, "好的"), "li", overall=5, rewrite="删除的改写")
    s.delete_conversation(c7, "boss")

    s.disable_user("old")
    s.close()
    return ids


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passwords, "SCRYPT_N", 2**10)  # hashes carry their parameters: cheaper, same logic
        path = tmp_path_factory.mktemp("db") / "feedback.db"
        return path, seed_db(path)


@pytest.fixture(scope="module")
def exported(seeded, tmp_path_factory) -> tuple[Path, dict, dict[str, int]]:
    path, ids = seeded
    out = tmp_path_factory.mktemp("exports") / "default"
    manifest = export(path, out, ExportOptions(eval_fraction=0.3))
    return out, manifest, ids


def rows(out: Path, rel: str) -> list:
    return formats.read_rows(out / rel) if (out / rel).exists() else []


def both_splits(out: Path, kind: str, folder: str = "trl") -> list[tuple[dict, dict]]:
    """(row, meta) over train and eval."""
    pairs = []
    for split in ("train", "eval"):
        data = rows(out, f"{folder}/{kind}_{split}.jsonl")
        meta = rows(out, f"meta/{kind}_{split}.jsonl")
        assert len(data) == len(meta)
        pairs += list(zip(data, meta))
    return pairs


def by_message(out: Path, kind: str) -> dict[tuple, dict]:
    return {tuple(meta["message_ids"]): row for row, meta in both_splits(out, kind)}


def texts_of(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False)


# -- what goes in ----------------------------------------------------------------------------------
def test_dpo_pairs_match_the_seed(exported) -> None:
    out, manifest, ids = exported
    pairs = by_message(out, "dpo")
    assert set(pairs) == {(ids["a11"], ids["a11b"]), (ids["a12"],), (ids["x"], ids["y"]),
                          (ids["a34b"], ids["a34"])}
    assert pairs[(ids["a11"], ids["a11b"])]["rejected"] == [{"role": "assistant", "content": "早点睡就好了。"}]
    rewrite = pairs[(ids["a12"],)]
    assert rewrite["chosen"][0]["content"] == "被老板批评一定很难受。这种情况持续多久了？"
    assert rewrite["rejected"][0]["content"] == "嗯。"
    assert "旧的改写" not in texts_of(list(pairs.values()))  # superseded by a later revision
    comparison = pairs[(ids["x"], ids["y"])]
    assert (comparison["chosen"][0]["content"], comparison["rejected"][0]["content"]) == (
        "和室友吵架一定让你很烦恼。", "你们为什么吵架？")
    assert comparison["prompt"] == [{"role": "system", "content": STAGES.get("assessment").instruction},
                                    {"role": "user", "content": "我和室友总是吵架。"}]
    blocked = pairs[(ids["a34b"], ids["a34"])]
    assert blocked["rejected"][0]["content"] == UNSAFE_ORIGINAL  # what the model wrote, not the canned reply
    counts = manifest["counts"]["dpo"]
    assert counts["by_source"] == {"comparison": 1, "rewrite": 1, "score": 2}
    assert manifest["drops"]["dpo"] == {"comparison:conflicting_votes": 1, "comparison:tie": 1}
    assert manifest["notes"]["comparisons_superseded_by_same_rater"] == 1


def test_kto_labels_match_the_seed(exported) -> None:
    out, manifest, ids = exported
    labels = {meta["message_ids"][0]: row["label"] for row, meta in both_splits(out, "kto")}
    assert labels == {ids["a11"]: True, ids["a11b"]: False, ids["a12"]: False, ids["y"]: True,
                      ids["a31"]: True, ids["a32"]: True, ids["a33"]: True, ids["a34"]: False,
                      ids["a34b"]: True, ids["a42"]: True}
    assert all(type(label) is bool for label in labels.values())
    assert manifest["counts"]["kto"]["by_source"] == {"rating": 9, "thumb": 1}
    assert (manifest["counts"]["kto"]["label_true"], manifest["counts"]["kto"]["label_false"]) == (7, 3)
    assert manifest["drops"]["kto"] == {"rated_without_overall_score": 1, "thumbs_cancel_out": 1,
                                        "unknown_stage:retired_stage": 1}
    completions = {meta["message_ids"][0]: row["completion"][0]["content"] for row, meta in both_splits(out, "kto")}
    assert completions[ids["a33"]] == CRISIS_TEXT  # the app's crisis preamble is not the model's text
    assert completions[ids["a34"]] == UNSAFE_ORIGINAL


def test_prompt_is_exactly_what_the_model_saw(exported) -> None:
    out, _, ids = exported
    prompts = {meta["message_ids"][0]: row["prompt"] for row, meta in both_splits(out, "kto")}
    assert prompts[ids["a31"]][0] == {"role": "system", "content": INTAKE}
    assert prompts[ids["a32"]][0] == {"role": "system", "content": INTERVENTION}  # stage switched
    crisis = export_mod._crisis_instruction()
    expected = (crisis + "\n\n" + INTERVENTION) if crisis else INTERVENTION
    assert prompts[ids["a33"]][0]["content"] == expected
    # Context messages keep their stored text, the preamble the client saw included.
    assert prompts[ids["a34"]][-2]["content"] == CRISIS_PREAMBLE + CRISIS_TEXT
    assert [m["role"] for m in prompts[ids["a34"]]] == ["system"] + ["user", "assistant"] * 3 + ["user"]


def test_sft_whole_conversations_with_rewrites(exported) -> None:
    out, manifest, ids = exported
    sft = by_message(out, "sft")
    assert set(sft) == {(ids["a11"], ids["a12"]), (ids["a31"],)}
    c1 = sft[(ids["a11"], ids["a12"])]["messages"]
    assert [m["role"] for m in c1] == ["system", "user", "assistant", "user", "assistant"]
    assert c1[0]["content"] == INTAKE
    assert c1[-1]["content"] == "被老板批评一定很难受。这种情况持续多久了？"  # rewrite substituted
    assert manifest["drops"]["sft"] == {
        "approved_reply_after_system_prompt_change": 2, "approved_reply_after_unapproved_one": 1,
        "approved_reply_not_on_active_path": 1, "unknown_stage:retired_stage": 1}
    bianque = rows(out, "bianque/sft_train.jsonl") + rows(out, "bianque/sft_eval.jsonl")
    assert len(bianque) == manifest["counts"]["turn"]["total"] == 7
    assert manifest["counts"]["turn"]["by_source"] == {"rating": 6, "rewrite": 1}
    a32 = next(r for r in bianque if r["target"] == "这个想法出现时，有什么证据支持它？")
    assert a32["input"].startswith(INTERVENTION + "\n对话：\n来访者：")
    assert a32["input"].endswith("来访者：我总觉得自己什么都做不好。\n咨询师：")


def test_exclusions_and_deleted_data(exported) -> None:
    out, manifest, _ = exported
    assert manifest["excluded"] == {"demo_conversations": 1, "demo_messages": 2, "demo_ratings": 1,
                                    "disabled_rater_comparisons": 1, "disabled_rater_ratings": 1,
                                    "disabled_rater_thumbs": 1}
    everything = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file())
    for absent in ("演示", "删除", DELETED_PHONE, "旧的改写"):
        assert absent not in everything


def test_include_disabled_and_demo_change_the_data(seeded, tmp_path) -> None:
    path, ids = seeded
    manifest = export(path, tmp_path / "all", ExportOptions(include_disabled=True, include_demo=True, scrub=False))
    assert manifest["excluded"] == {}
    assert manifest["drops"]["dpo"]["comparison:conflicting_votes"] == 2  # the disabled rater voted y
    assert manifest["drops"]["dpo"]["score:gap_below_margin"] == 1  # a11 mean (5+4+1)/3 < 1.5 + 2
    labels = {m["message_ids"][0]: r["label"] for r, m in both_splits(tmp_path / "all", "kto")}
    assert labels[ids["a11"]] is False
    assert manifest["counts"]["kto"]["total"] == 11  # + the demo reply


def test_majority_aggregate(seeded, tmp_path) -> None:
    path, ids = seeded
    manifest = export(path, tmp_path / "maj", ExportOptions(aggregate="majority", scrub=False))
    # a11: li 5, wang 4 -> no majority; a11b: 1 vs 2 -> none either.
    assert manifest["drops"]["kto"]["no_majority_score"] == 3  # a12: 3 vs 2 as well
    assert manifest["notes"]["replies_without_majority_score"] == 3
    assert manifest["counts"]["dpo"]["by_source"] == {"comparison": 1, "rewrite": 1, "score": 1}


# -- privacy ---------------------------------------------------------------------------------------
def test_pii_scrubbed_everywhere_and_consistently(exported) -> None:
    out, manifest, ids = exported
    everything = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file())
    assert PHONE not in everything and NAME not in everything
    # Each distinct text of a conversation counted once: the client message (name + phone), the reply
    # that used the name, and the assessment answer.
    assert manifest["scrub"] == {"enabled": True, "counts": {"name": 3, "phone": 1}, "total": 4}
    # The same client message reads the same in every row of its conversation.
    c1_prompts = {json.dumps(row["prompt"][:2], ensure_ascii=False) for row, meta in both_splits(out, "kto")
                  if meta["conversation_id"] == ids["c1"]}
    c1_prompts |= {json.dumps(row["prompt"][:2], ensure_ascii=False) for row, meta in both_splits(out, "dpo")
                   if meta["conversation_id"] == ids["c1"]}
    assert len(c1_prompts) == 1
    pair = by_message(out, "dpo")[(ids["a11"], ids["a11b"])]
    client, chosen = pair["prompt"][1]["content"], pair["chosen"][0]["content"]
    name_mark = chosen.split("，")[0]  # the reply opened with the client's name
    assert name_mark != NAME and name_mark in client
    items = rows(out, "assessment/item_scores.jsonl")
    assert NAME not in items[0]["answer"]


def test_no_scrub_keeps_text(seeded, tmp_path) -> None:
    path, _ = seeded
    manifest = export(path, tmp_path / "raw", ExportOptions(scrub=False))
    assert manifest["scrub"] == {"enabled": False, "counts": {}, "total": 0}
    assert PHONE in (tmp_path / "raw" / "trl" / "kto_train.jsonl").read_text(encoding="utf-8") + \
        ((tmp_path / "raw" / "trl" / "kto_eval.jsonl").read_text(encoding="utf-8")
         if (tmp_path / "raw" / "trl" / "kto_eval.jsonl").exists() else "")


# -- split ---------------------------------------------------------------------------------------
def test_split_by_conversation_is_disjoint_and_deterministic(seeded, exported, tmp_path) -> None:
    path, _ = seeded
    out, manifest, _ = exported
    sides: dict[str, set[int]] = {"train": set(), "eval": set()}
    for split in sides:
        for kind in ("dpo", "kto", "sft"):
            sides[split] |= {m["conversation_id"] for m in rows(out, f"meta/{kind}_{split}.jsonl")}
    assert sides["eval"] and sides["train"] and not sides["train"] & sides["eval"]
    assert sides["eval"] <= set(manifest["split"]["eval_conversation_ids"])
    again = export(path, tmp_path / "again", ExportOptions(eval_fraction=0.3))
    assert again["files"] == manifest["files"]  # same seed, same bytes
    items = rows(out, "assessment/item_scores.jsonl")
    assert {i["split"] for i in items} == {"eval" if items[0]["conversation_id"] in sides["eval"] else "train"}


# -- formats ------------------------------------------------------------------------------------
def test_trl_files_load_with_datasets(exported) -> None:
    from datasets import load_dataset

    out, manifest, _ = exported
    expected = {"dpo": {"prompt", "chosen", "rejected"}, "kto": {"prompt", "completion", "label"},
                "sft": {"messages"}}
    for rel in manifest["formats"]["trl"]:
        kind = Path(rel).stem.split("_")[0]
        ds = load_dataset("json", data_files=str(out / rel), split="train")
        assert set(ds.column_names) == expected[kind]
        if kind == "kto":
            assert ds.features["label"].dtype == "bool"
        for row in ds:
            for column in expected[kind] - {"label"}:
                assert formats.role_problem(row[column] if column != "prompt" else
                                            row["prompt"] + [{"role": "assistant", "content": ""}]) is None


def test_llamafactory_rows_and_dataset_info(exported) -> None:
    out, manifest, _ = exported
    info = json.loads((out / "llamafactory" / "dataset_info.json").read_text(encoding="utf-8"))
    files = sorted(p.name for p in (out / "llamafactory").glob("*.json") if p.name != "dataset_info.json")
    assert sorted(entry["file_name"] for entry in info.values()) == files
    for name, entry in info.items():
        kind = entry["file_name"].split("_")[0]
        assert entry["formatting"] == "sharegpt" and entry["columns"]["messages"] == "conversations"
        assert entry.get("ranking", False) == (kind == "dpo")
        assert ("kto_tag" in entry["columns"]) == (kind == "kto")
        data = json.loads((out / "llamafactory" / entry["file_name"]).read_text(encoding="utf-8"))
        assert data and all(formats.llamafactory_problem(row, kind) is None for row in data)
        for row in data:
            for column in entry["columns"].values():
                assert column in row
    assert manifest["formats"]["unrepresentable"] == {}
    total = sum(manifest["formats"]["llamafactory"]["rows"].values())
    assert total == sum(manifest["formats"]["trl"].values())


def test_manifest_checksums_and_metadata(exported) -> None:
    import hashlib

    out, manifest, ids = exported
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == info["sha256"]
    assert manifest["options"]["kto_threshold"] == 4.0 and manifest["options"]["seed"] == 0
    assert manifest["stages"]["sha256"] == hashlib.sha256(Path(STAGES.path).read_bytes()).hexdigest()
    versions = {v["id"]: v for v in manifest["model_versions"]}
    assert set(versions) == {ids["mv1"], ids["mv2"]} and versions[ids["mv2"]]["adapter"] == "runs/a1"
    assert manifest["counts"]["assessment_items"] == 2
    items = rows(out, "assessment/item_scores.jsonl")
    assert [(i["item"], i["model_score"], i["clinician_score"]) for i in items] == [(1, 3, 2), (2, 1, None)]


# -- errors --------------------------------------------------------------------------------------
def test_empty_and_ratings_free_databases_fail_and_write_nothing(tmp_path, capsys) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passwords, "SCRYPT_N", 2**10)
        store = Store(tmp_path / "empty.db")
        store.add_user("li", "password-li")
        conv = store.create_conversation("li", "intake")
        store.add_assistant_message(conv, store.add_user_message(conv, "你好"), "你好")
        store.close()
    out = tmp_path / "exports" / "x"
    code = export_mod.main(["--db", str(tmp_path / "empty.db"), "--out", str(out)])
    assert code == 2 and not out.exists() and not out.parent.exists()
    assert "没有可导出的评分" in capsys.readouterr().err
    assert export_mod.main(["--db", str(tmp_path / "missing.db"), "--out", str(out)]) == 2
    assert not (tmp_path / "missing.db").exists()


def test_existing_output_needs_overwrite(seeded, tmp_path, capsys) -> None:
    path, _ = seeded
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert export_mod.main(["--db", str(path), "--out", str(out), "--no-scrub"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert export_mod.main(["--db", str(path), "--out", str(out), "--no-scrub", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_bad_options_are_clear_errors(seeded, tmp_path, capsys) -> None:
    path, _ = seeded
    assert export_mod.main(["--db", str(path), "--out", str(tmp_path / "o"), "--kto-threshold", "7"]) == 2
    assert "kto_threshold" in capsys.readouterr().err
    assert export_mod.main(["--db", str(path), "--out", str(tmp_path / "o"), "--eval-fraction", "1.5"]) == 2
    assert not (tmp_path / "o").exists()


def test_doctor_led_prompt_is_folded_for_llamafactory() -> None:
    prompt = [{"role": "system", "content": "S"}, {"role": "assistant", "content": "你好，我是医生。"},
              {"role": "user", "content": "我睡不好。"}]
    row = formats.sharegpt_ranking_row(prompt, "好的", "嗯")
    assert row["system"] == "S\n" + formats.LEADING_ASSISTANT_NOTE.format(content="你好，我是医生。")
    assert row["conversations"] == [{"from": "human", "value": "我睡不好。"}]
    assert formats.llamafactory_problem(row, "dpo") is None
    with pytest.raises(formats.FormatError) as err:  # the opening line alone has no client turn
        formats.sharegpt_kto_row(prompt[:1], "你好，我是医生。", True)
    assert err.value.reason == "prompt_without_client_turn"
    assert formats.trl_kto_row(prompt[:1], "你好，我是医生。", True)["label"] is True


def test_export_help_documents_every_flag() -> None:
    parser = export_mod.make_parser()
    for action in parser._actions:
        assert action.help, action.dest


def test_export_files_are_private_to_this_account(exported) -> None:
    import stat

    out, _, _ = exported
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
