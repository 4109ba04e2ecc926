"""Auth: who may call what on the real app.

    .venv/bin/python -m pytest tests/test_auth.py

- Without a login (no cookie, a forged cookie, a wrong password, a disabled account) every named
  endpoint is refused on every HTTP route Gradio offers for it, and so is every unnamed UI event.
- A demo account chats in its own demo conversations but cannot rate, thumb, choose in a comparison
  or correct a screening score, and is not an admin.
- A clinician cannot reach the admin endpoints (/flags, /review_flag) nor another clinician's
  conversation, messages or screening through any endpoint; an admin can (the positive control).
Every refusal is an error with a message and writes nothing (a hash of every written table).
"""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.reliability import ENDPOINTS, PASSWORD, clean_error, digest, rows, seed_accounts, start_app

pytestmark = pytest.mark.slow

REPLY_TOKENS = 4
PROTECTED_ROUTES = ("/gradio_api/call/{name}", "/gradio_api/call/v2/{name}", "/gradio_api/run/{name}",
                    "/gradio_api/api/{name}")


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    db = tmp / "feedback.db"
    store = seed_accounts(db, {"boss": "admin", "wang": "clinician", "li": "clinician", "expo": "demo",
                               "gone": "clinician", "late": "clinician"})
    store.disable_user("gone")
    live = start_app(tiny_model_dir, db, tmp / "app.log", REPLY_TOKENS)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def clients(app):
    made = {name: Client(app.url, auth=(name, PASSWORD), verbose=False) for name in ("boss", "wang", "li", "expo")}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def li_world(clients, app):
    """li's conversation with a reply, a comparison pair, a crisis flag and a screening item."""
    li = clients["li"]
    conv = li.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    reply = li.predict(conversation_id=conv, message="我真的不想活了。", stage_id="", api_name="/chat")
    pair = li.predict(conversation_id=conv, opponent_version_id=0, api_name="/compare")
    screen = li.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    assessment = li.predict(conversation_id=screen, instrument="phq9", api_name="/start_screening")["assessment_id"]
    li.predict(conversation_id=screen, message="几乎每天都这样", stage_id="", api_name="/chat")
    flag = rows(app.db, "SELECT id FROM flags WHERE conversation_id = ?", (conv,))[0]["id"]
    return {"conv": conv, "reply": reply["message_id"], "a": pair["message_a"], "b": pair["message_b"],
            "screen": screen, "assessment": assessment, "flag": flag}


def refused(client: Client, api_name: str, **kwargs) -> str:
    with pytest.raises(AppError) as info:
        client.predict(**kwargs, api_name=api_name)
    message = info.value.message
    assert clean_error(message) is None, (api_name, message)
    return message


# -- no login ---------------------------------------------------------------------------------
def test_named_endpoints_are_exactly_the_known_ones(clients):
    api = clients["wang"].view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == set(ENDPOINTS)


@pytest.mark.parametrize("cookies", [{}, {"access-token": "forged"}], ids=["no-cookie", "forged-cookie"])
def test_every_endpoint_refused_without_login(app, clients, cookies):
    dependencies = clients["wang"].config["dependencies"]
    before = digest(app.db)
    with httpx.Client(base_url=app.url, cookies=cookies, timeout=30) as http:
        for name in ENDPOINTS:
            for route in PROTECTED_ROUTES:
                resp = http.post(route.format(name=name.lstrip("/")), json={"data": []})
                assert resp.status_code == 401, (name, route, resp.status_code, resp.text[:200])
        for dep in dependencies:  # the named endpoints and every unnamed UI event, by index
            resp = http.post("/gradio_api/queue/join",
                             json={"data": [], "fn_index": dep["id"], "session_hash": "attacker"})
            assert resp.status_code == 401, (dep.get("api_name"), resp.status_code)
        for path in ("/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/queue/data?session_hash=x",
                     "/monitoring"):
            assert http.get(path).status_code == 401, path
    assert digest(app.db) == before


def test_wrong_password_and_disabled_account_cannot_log_in(app):
    for user, password in (("wang", "wrong-password"), ("gone", PASSWORD), ("nobody", PASSWORD),
                           ("wang", ""), ("wang\x00", PASSWORD)):
        with pytest.raises(Exception):
            Client(app.url, auth=(user, password), verbose=False)
        with httpx.Client(base_url=app.url, timeout=30) as http:
            resp = http.post("/login", data={"username": user, "password": password})
            assert resp.status_code in (400, 401, 422), (user, resp.status_code)
            assert not [c for c in http.cookies if c.startswith("access-token")]


def test_account_disabled_after_login_is_refused(app):
    from mvp.store import Store

    client = Client(app.url, auth=("late", PASSWORD), verbose=False)
    try:
        conv = client.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
        Store(app.db).disable_user("late")
        before = digest(app.db)
        refused(client, "/stages")
        refused(client, "/new_conversation", stage_id="", case_id="")
        refused(client, "/chat", conversation_id=conv, message="你好", stage_id="")
        refused(client, "/history", conversation_id=conv)
        assert digest(app.db) == before
    finally:
        client.close()


# -- demo accounts ----------------------------------------------------------------------------
def test_demo_account_cannot_compare_rate_thumb_choose_or_correct(app, clients, li_world):
    expo = clients["expo"]
    conv = expo.predict(stage_id="", case_id="", api_name="/new_conversation")
    assert conv["is_demo"] is True
    reply = expo.predict(conversation_id=conv["id"], message="你好", stage_id="", api_name="/chat")
    screen = expo.predict(stage_id="", case_id="", api_name="/new_conversation")["id"]
    assessment = expo.predict(conversation_id=screen, instrument="phq9", api_name="/start_screening")["assessment_id"]
    expo.predict(conversation_id=screen, message="完全没有", stage_id="", api_name="/chat")
    before = digest(app.db)
    refused(expo, "/compare", conversation_id=conv["id"], opponent_version_id=0)  # it would write two replies
    refused(expo, "/rate", message_id=reply["message_id"], overall=5, comment="demo")
    refused(expo, "/rate", message_id=reply["message_id"], rewrite="更好的回复")
    refused(expo, "/thumb", message_id=reply["message_id"], value=1)
    for choice in ("a", "b", "tie", "both_bad"):
        refused(expo, "/choose", message_a=reply["message_id"], message_b=reply["message_id"], choice=choice)
    refused(expo, "/correct_item", assessment_id=assessment, item_no=1, score=2)
    refused(expo, "/flags", include_reviewed=True)
    refused(expo, "/review_flag", flag_id=li_world["flag"], note="demo")
    refused(expo, "/history", conversation_id=li_world["conv"])
    refused(expo, "/rate", message_id=li_world["reply"], overall=1)
    assert digest(app.db) == before
    for table in ("ratings", "thumbs", "comparisons"):
        assert rows(app.db, f"SELECT COUNT(*) AS n FROM {table} WHERE rater = 'expo'") == [{"n": 0}]


# -- clinicians and admins ----------------------------------------------------------------------
def test_clinician_cannot_reach_admin_endpoints(app, clients, li_world):
    wang = clients["wang"]
    before = digest(app.db)
    refused(wang, "/flags", include_reviewed=False)
    refused(wang, "/flags", include_reviewed=True)
    refused(wang, "/review_flag", flag_id=li_world["flag"], note="not mine")
    assert digest(app.db) == before
    assert rows(app.db, "SELECT reviewed_by FROM flags WHERE id = ?", (li_world["flag"],)) == [{"reviewed_by": None}]


def test_clinician_cannot_reach_another_clinicians_conversation(app, clients, li_world):
    wang, w = clients["wang"], li_world
    before = digest(app.db)
    calls = [
        ("/history", dict(conversation_id=w["conv"])),
        ("/chat", dict(conversation_id=w["conv"], message="偷看一下", stage_id="")),
        ("/chat", dict(conversation_id=w["conv"], message="换个阶段", stage_id="intervention")),
        ("/regenerate", dict(conversation_id=w["conv"])),
        ("/stop", dict(conversation_id=w["conv"])),
        ("/compare", dict(conversation_id=w["conv"], opponent_version_id=0)),
        ("/rate", dict(message_id=w["reply"], overall=1, comment="not mine")),
        ("/thumb", dict(message_id=w["reply"], value=-1)),
        ("/choose", dict(message_a=w["a"], message_b=w["b"], choice="a")),
        ("/start_screening", dict(conversation_id=w["conv"], instrument="gad7")),
        ("/screening", dict(conversation_id=w["screen"])),
        ("/correct_item", dict(assessment_id=w["assessment"], item_no=1, score=0)),
        ("/delete_conversation", dict(conversation_id=w["conv"])),
    ]
    for api_name, kwargs in calls:
        refused(wang, api_name, **kwargs)
    assert digest(app.db) == before
    assert rows(app.db, "SELECT stage_id FROM conversations WHERE id = ?", (w["conv"],))[0]["stage_id"] != "intervention"


def test_admin_can_review_and_read_any_conversation(app, clients, li_world):
    boss = clients["boss"]
    assert any(f["id"] == li_world["flag"] for f in boss.predict(include_reviewed=False, api_name="/flags"))
    history = boss.predict(conversation_id=li_world["conv"], api_name="/history")
    assert [m["role"] for m in history][:2] == ["user", "assistant"]
    assert boss.predict(flag_id=li_world["flag"], note="已复核", api_name="/review_flag") is True
    assert rows(app.db, "SELECT reviewed_by FROM flags WHERE id = ?", (li_world["flag"],)) == [{"reviewed_by": "boss"}]
