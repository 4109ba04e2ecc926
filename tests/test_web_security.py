"""The running app's HTTP protections (mvp.app.web, mvp.app.auth): origins, cookies, uploads,
sessions that end (logout, password change, disable), and the login lockout through the real route."""

import json
import time

import httpx
import pytest

from mvp.store import Store
from tests.live_app import LiveApp

PASSWORD = "web-pass-1234"


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    db = tmp / "feedback.db"
    store = Store(db)
    for name in ("admin", "wang", "li", "zhao", "gone"):
        store.add_user(name, PASSWORD, "admin" if name == "admin" else "clinician")
    live = LiveApp(tiny_model_dir, db, tmp / "app.log", "--allowed-origins", "https://clinic.example.org")
    yield live
    live.stop()


def login(app, name, password=PASSWORD):
    client = httpx.Client(base_url=app.url, timeout=30)
    response = client.post("/login", data={"username": name, "password": password})
    return client, response


def logged_in(client) -> bool:
    status = client.get("/gradio_api/login_check").status_code
    assert status in (200, 401)
    return status == 200


def test_cookie_is_samesite_lax_and_logout_ends_the_session(app):
    client, response = login(app, "wang")
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    assert cookies and all("samesite=lax" in c.lower() for c in cookies)
    assert logged_in(client)
    client.get("/logout", follow_redirects=False)
    assert not logged_in(client)


def test_other_origins_and_uploads_are_refused(app):
    client, _ = login(app, "admin")
    evil = client.post("/gradio_api/info", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "来源" in evil.json()["error"]
    for origin in (app.url, "https://clinic.example.org"):
        assert client.get("/gradio_api/info", headers={"Origin": origin}).status_code == 200
    upload = client.post("/gradio_api/upload", files={"files": ("a.txt", b"x" * 10)})
    assert upload.status_code == 413


def test_password_change_and_disable_end_sessions(app):
    zhao, _ = login(app, "zhao")
    gone, _ = login(app, "gone")
    assert logged_in(zhao) and logged_in(gone)
    store = Store(app.db)
    store.set_password("zhao", "another-pass-123")
    store.disable_user("gone")
    time.sleep(2.2)  # the account row is re-read at most every 2 s per session
    assert not logged_in(zhao) and not logged_in(gone)
    assert "another-pass-123" not in app.output()


def test_thirty_wrong_passwords_lock_the_account_not_others(app):
    for i in range(30):
        _, response = login(app, "li", f"wrong-{i}")
        assert response.status_code == 400
    _, right = login(app, "li")
    assert right.status_code == 400  # locked for a while, even with the right password
    other, response = login(app, "admin")
    assert response.status_code == 200 and logged_in(other)
    log = app.output()
    assert "failed login: 'li'" in log and "locked" in log and "wrong-1" not in log


def test_user_errors_log_one_line_without_traceback(app):
    from gradio_client import Client

    client = Client(app.url, auth=("admin", PASSWORD), verbose=False)
    try:
        with pytest.raises(Exception, match="消息不存在"):
            client.predict(message_id=987654, overall=3, api_name="/rate")
    finally:
        client.close()
    time.sleep(0.5)
    log = app.output()
    assert "user error in rate" in log and "Traceback" not in log


def test_generation_errors_shown_without_addresses_or_raw_exception_text():
    from mvp.app.service.base import public_error
    from mvp.model.engine import GenerationError

    shown = public_error(GenerationError("无法连接模型服务（http://10.1.2.3:8000/v1）：请确认服务已启动"))
    assert "10.1.2.3" not in shown and "http" not in shown and "无法连接模型服务" in shown
    raw = public_error(GenerationError("生成失败：RuntimeError: CUDA error at /opt/torch/x.cu:12"))
    assert "CUDA" not in raw and "/opt" not in raw and "日志" in raw


def test_a_missing_api_argument_is_named(app):
    client, _ = login(app, "admin")
    for endpoint, data, expected in (("thumb", [], "缺少参数：message_id、value"),
                                     ("choose", [1, 2], "缺少参数：choice")):
        event = client.post(f"/gradio_api/call/{endpoint}", json={"data": data}).json()["event_id"]
        stream = client.get(f"/gradio_api/call/{endpoint}/{event}").text
        assert stream.startswith("event: error"), stream
        payload = json.loads(stream.split("data:", 1)[1])
        assert payload["error"] == expected
