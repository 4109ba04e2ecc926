"""A PHQ-9 screening run end to end through the live app with gradio_client: items asked in order,
scores stored, total and band right, a correction stored, item 9 > 0 flags the conversation."""


import pytest
from gradio_client import Client

from mvp.assessment import load_instruments
from mvp.store import Store
from tests.live_app import LiveApp, db_rows

PASSWORD = "screen-pass-123"
ANSWERS = [  # (answer, expected score) for PHQ-9 items 1-9
    ("几乎每天都这样，什么都不想做", 3),
    ("一半以上的天数都很低落", 2),
    ("完全不会，睡得挺好的", 0),
    ("有好几天觉得累", 1),
    ("几乎每天都吃不下饭", 3),
    ("完全不会这样想", 0),
    ("有好几天看书看不进去", 1),
    ("完全不会", 0),
    ("有好几天会有这种念头", 1),
]


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("screening")
    store = Store(tmp / "feedback.db")
    store.add_user("wang", PASSWORD, "clinician")
    store.add_user("boss", PASSWORD, "admin")
    live = LiveApp(tiny_model_dir, tmp / "feedback.db", tmp / "app.log")
    yield live
    live.stop()


def rows(db, sql, params=()):
    return db_rows(db, sql, params)


def test_phq9_screening_end_to_end(app):
    phq9 = load_instruments()["phq9"]
    c = Client(app.url, auth=("wang", PASSWORD), verbose=False)
    conv = c.predict(stage_id="intake", case_id="", api_name="/new_conversation")
    c.predict(conversation_id=conv["id"], message="最近心情一直不太好。", stage_id="", api_name="/chat")
    started = c.predict(conversation_id=conv["id"], instrument="phq9", api_name="/start_screening")
    assert phq9.intro in started["text"] and phq9.items[0].question in started["text"]
    assert rows(app.db, "SELECT stage_id FROM conversations WHERE id = ?", (conv["id"],))[0]["stage_id"] == "assessment"

    # a vague answer gets a follow-up question, then the item is scored
    vague = c.predict(conversation_id=conv["id"], message="还行吧", stage_id="", api_name="/chat")
    assert vague["text"] == phq9.items[0].follow_up
    replies = []
    for i, (answer, _) in enumerate(ANSWERS):
        reply = c.predict(conversation_id=conv["id"], message=answer, stage_id="", api_name="/chat")
        replies.append(reply["text"])
        if i + 1 < len(ANSWERS):
            assert reply["text"].endswith(phq9.items[i + 1].question), (i, reply["text"])
    # the last answer (item 9 > 0) starts the safety flow: resources first
    assert "12356" in replies[-1] and phq9.closing in replies[-1]

    state = c.predict(conversation_id=conv["id"], api_name="/screening")
    assert [i["item_no"] for i in state["items"]] == list(range(1, 10))
    assert [i["score"] for i in state["items"]] == [s for _, s in ANSWERS]
    assert state["items"][0]["answer"].startswith("还行吧")
    assert state["items"][0]["needs_review"] is True  # it needed a follow-up
    expected = sum(s for _, s in ANSWERS)  # 11 -> 中度
    assert state["total"] == expected and state["band"] == phq9.band(expected)
    assert not state["active"]
    stored = rows(app.db, "SELECT * FROM assessments WHERE conversation_id = ?", (conv["id"],))[0]
    assert (stored["instrument"], stored["status"], stored["total"]) == ("phq9", "finished", expected)
    items = rows(app.db, "SELECT * FROM assessment_items WHERE assessment_id = ? ORDER BY item_no", (stored["id"],))
    assert [i["score"] for i in items] == [s for _, s in ANSWERS]
    assert items[3]["question"] == phq9.items[3].question and items[3]["answer"] == ANSWERS[3][0]

    # a correction is stored and changes the total
    corrected = c.predict(assessment_id=stored["id"], item_no=4, score=3, api_name="/correct_item")
    assert corrected["total"] == expected + 2 and corrected["band"] == phq9.band(expected + 2)
    item4 = rows(app.db, "SELECT clinician_score, corrected_by FROM assessment_items WHERE assessment_id = ? AND item_no = 4",
                 (stored["id"],))[0]
    assert item4 == {"clinician_score": 3, "corrected_by": "wang"}
    with pytest.raises(Exception):
        c.predict(assessment_id=stored["id"], item_no=4, score=7, api_name="/correct_item")

    # item 9 > 0 flagged the conversation for review
    flags = rows(app.db, "SELECT * FROM flags WHERE conversation_id = ?", (conv["id"],))
    assert any(f["source"] == "assessment" and f["category"] == "suicide" for f in flags)
    boss = Client(app.url, auth=("boss", PASSWORD), verbose=False)
    assert any(f["conversation_id"] == conv["id"] for f in boss.predict(include_reviewed=False, api_name="/flags"))

    # after the screening, chat goes back to the model
    after = c.predict(conversation_id=conv["id"], message="谢谢你。", stage_id="", api_name="/chat")
    assert after["status"] == "complete"


def test_screening_errors(app):
    c = Client(app.url, auth=("wang", PASSWORD), verbose=False)
    conv = c.predict(stage_id="", case_id="", api_name="/new_conversation")
    with pytest.raises(Exception):
        c.predict(conversation_id=conv["id"], instrument="bdi", api_name="/start_screening")
    c.predict(conversation_id=conv["id"], instrument="gad7", api_name="/start_screening")
    with pytest.raises(Exception):  # one at a time
        c.predict(conversation_id=conv["id"], instrument="phq9", api_name="/start_screening")
    with pytest.raises(Exception):  # no regenerate during a screening
        c.predict(conversation_id=conv["id"], api_name="/regenerate")
