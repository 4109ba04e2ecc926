"""Bradley–Terry ranking of model versions (train/ranking.py) from a real store's blind comparisons:
A beats B beats C is recovered, the intervals contain the estimates, the counts are right, ties and
"both bad" are handled as documented; the CLI (`python -m train.evaluate --ranking`) and the
dashboard's view of it.
"""

from __future__ import annotations

import random

import pytest

from mvp.store import Store
from train import ranking

# (winner index, loser index) probabilities: A beats B 80 %, B beats C 80 %, A beats C 90 %.
P_WIN = {(0, 1): 0.8, (1, 2): 0.8, (0, 2): 0.9}


@pytest.fixture()
def arena(tmp_path):
    """A feedback.db with three versions and 90 comparisons drawn from P_WIN, plus 6 ties and 3 'both bad'."""
    store = Store(tmp_path / "feedback.db")
    store.add_user("li", "password-li-123", "clinician")
    versions = [store.register_model_version("demo", adapter=f"/v/{n}", quantization="none", label=n) for n in "ABC"]
    rng = random.Random(7)
    expected = {v: {"comparisons": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0} for v in versions}
    conv = store.create_conversation("li", "intake", versions[0])
    plan = [(i, j, None) for (i, j) in P_WIN for _ in range(30)] + [(0, 1, "tie")] * 3 + [(1, 2, "tie")] * 3 \
        + [(0, 2, "both_bad")] * 3
    rng.shuffle(plan)
    for i, j, forced in plan:
        u = store.add_user_message(conv, "最近总是睡不着")
        left_first = rng.random() < 0.5  # which version is message_a varies, as in the app
        first, second = (i, j) if left_first else (j, i)
        a = store.add_assistant_message(conv, u, "回复甲", model_version_id=versions[first], make_active=False)
        b = store.add_assistant_message(conv, u, "回复乙", model_version_id=versions[second], make_active=False)
        if forced:
            choice = forced
        else:
            i_wins = rng.random() < P_WIN[(i, j)]
            choice = "a" if i_wins == left_first else "b"
        store.add_comparison(a, b, choice, "li", shown_left=a, activate_choice=False)
        for me in (i, j):
            e = expected[versions[me]]
            e["comparisons"] += 1
            if choice == "tie":
                e["ties"] += 1
            elif choice == "both_bad":
                e["both_bad"] += 1
            else:
                winner = first if choice == "a" else second
                e["wins" if winner == me else "losses"] += 1
    return store, versions, expected


def test_the_order_is_recovered_with_intervals_and_counts(arena):
    store, versions, expected = arena
    result = ranking.from_store(store)
    rows = result["ranking"]
    assert [r["version_id"] for r in rows] == versions  # A, B, C
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert result["comparisons"] == 90 + 9
    for r in rows:
        assert r["ci"][0] <= r["strength"] <= r["ci"][1]
        assert {k: r[k] for k in expected[r["version_id"]]} == expected[r["version_id"]]
        assert r["label"] in "ABC" and r["status"] == "servable"
    assert abs(sum(r["strength"] for r in rows)) < 1e-6  # centred
    assert rows[0]["ci"][0] > rows[2]["ci"][1]  # A and C are separated beyond noise
    # pairwise win rates keep their counts and carry a Wilson interval around the rate
    for p in result["pairs"]:
        assert p["n"] == p["wins_a"] + p["wins_b"] + p["ties"] + p["both_bad"]
        low, high = p["win_rate_ci"]
        assert low <= p["win_rate_a"] <= high


def test_ranking_is_reproducible_and_handles_ties_and_no_data():
    outcomes = [{"version_a": 1, "version_b": 2, "choice": "tie"}] * 4
    rows = ranking.rank(outcomes)
    assert [round(r["strength"], 6) for r in rows] == [0.0, 0.0]  # ties only: equal strengths
    assert ranking.rank(outcomes) == rows
    only_bad = ranking.rank([{"version_a": 1, "version_b": 2, "choice": "both_bad"}])
    assert all(r["strength"] is None and r["rank"] is None and r["both_bad"] == 1 for r in only_bad)
    assert ranking.rank([]) == []
    assert "还没有" in ranking.table({"ranking": [], "pairs": [], "comparisons": 0})


def test_evaluate_ranking_cli_and_the_dashboard_view(arena, capsys):
    from train.evaluate import main

    store, versions, _ = arena
    assert main(["--ranking", "--db", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "Bradley–Terry" in out and "95%" in out and out.index(" A ") < out.index(" C ")
    assert main(["--ranking", "--db", "/nonexistent/feedback.db"]) == 2
    from mvp.app.ui import render

    text, plot, table = render.ranking_view(ranking.from_store(store))
    assert "99 次盲评比较" in text and "两两胜率" in text
    assert list(table["名次"]) == [1, 2, 3] and "ranking-forest" in plot
    assert table["比较次数"].sum() == 2 * 99
