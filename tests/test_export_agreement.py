"""The export's rater-agreement option (issue 16): raters whose alpha against the others is below
--min-rater-alpha are left out or down-weighted, and the manifest says who, their alpha, n and policy."""

import json

import pytest

from mvp.store import Store
from tests.test_export import both_splits
from train import export as export_cli
from train.export import ExportError, ExportOptions, export

PW = "long-password-1"
# Six replies; li, wang and zhou agree, zhao says the opposite. Reply 0: 5, 5, 4 and zhao 1 ->
# mean 3.75 (KTO label False) with zhao, 4.67 (True) without him.
SCORES = {"li": [5, 1, 5, 1, 4, 2], "wang": [5, 2, 4, 1, 4, 2], "zhou": [4, 1, 5, 2, 5, 1], "zhao": [1, 5, 1, 5, 2, 4]}


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "feedback.db"
    store = Store(path)
    for name in ("owner", *SCORES):
        store.add_user(name, PW, "clinician")
    version = store.register_model_version("m")
    cid = store.create_conversation("owner", "intake", version)
    replies = []
    for i in range(6):
        user = store.add_user_message(cid, f"来访者的第 {i} 句话")
        replies.append(store.add_assistant_message(cid, user, f"咨询师的第 {i} 条回复"))
    for rater, scores in SCORES.items():
        for reply, score in zip(replies, scores):
            store.add_rating(reply, rater, overall=score)
    store.close()
    return path, replies


def kto_labels(out):
    return {meta["message_ids"][0]: row["label"] for row, meta in both_splits(out, "kto")}


def test_without_the_option_every_rater_counts(db, tmp_path):
    path, replies = db
    manifest = export(path, tmp_path / "all", ExportOptions(scrub=False))
    assert manifest["rater_agreement"] is None
    assert kto_labels(tmp_path / "all") == dict.fromkeys(replies, False)


def test_exclude_drops_the_disagreeing_rater_and_records_it(db, tmp_path):
    path, replies = db
    manifest = export(path, tmp_path / "ex", ExportOptions(scrub=False, min_rater_alpha=0.5))
    record = manifest["rater_agreement"]
    assert (record["min_alpha"], record["policy"]) == (0.5, "exclude")
    by_rater = {r["rater"]: r for r in record["raters"]}
    assert by_rater["zhao"]["action"] == "excluded" and by_rater["zhao"]["alpha"] < 0.5
    assert by_rater["zhao"]["n_items"] == 6 and by_rater["zhao"]["weight"] == 0
    assert by_rater["li"]["action"] == "kept" and by_rater["li"]["alpha"] >= 0.5
    assert {r for r, e in by_rater.items() if e["action"] == "kept"} == {"li", "wang", "zhou"}
    assert manifest["excluded"]["low_agreement_rater_ratings"] == 6
    assert manifest["options"]["min_rater_alpha"] == 0.5
    assert kto_labels(tmp_path / "ex") == dict(zip(replies, [True, False, True, False, True, False]))


def test_weight_policy_down_weights_by_alpha_over_threshold(db, tmp_path):
    path, _ = db
    manifest = export(path, tmp_path / "w", ExportOptions(scrub=False, min_rater_alpha=0.99, rater_policy="weight"))
    for entry in manifest["rater_agreement"]["raters"]:
        if entry["alpha"] >= 0.99:
            assert (entry["action"], entry["weight"]) == ("kept", 1.0)
        else:
            assert entry["weight"] == round(max(entry["alpha"], 0) / 0.99, 4)
            assert entry["action"] == ("excluded" if entry["weight"] == 0 else "weighted")


def test_weighted_mean_aggregate():
    from train.sample_types import aggregate_scores

    assert aggregate_scores([5, 5, 1], "mean", [1, 1, 0.5]) == (round(10.5 / 2.5, 4), False)
    assert aggregate_scores([5, 1, 1], "majority", [1, 0.4, 0.4]) == (5.0, False)
    assert aggregate_scores([5], "mean", [0]) == (None, False)


def test_cli_flags_and_bad_values(db, tmp_path, capsys):
    path, _ = db
    assert export_cli.main(["--db", str(path), "--out", str(tmp_path / "cli"), "--no-scrub",
                            "--min-rater-alpha", "0.5", "--rater-policy", "exclude"]) == 0
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text(encoding="utf-8"))
    assert [r["rater"] for r in manifest["rater_agreement"]["raters"] if r["action"] == "excluded"] == ["zhao"]
    with pytest.raises(ExportError):
        ExportOptions(min_rater_alpha=2)
    with pytest.raises(ExportError):
        ExportOptions(min_rater_alpha=0.5, rater_policy="drop")
