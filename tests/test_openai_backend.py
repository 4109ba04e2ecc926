"""The openai backend (mvp.model.openai_backend) against a real `transformers serve` on loopback, and through
the whole app (python app.py --backend openai) with gradio_client; failure cases (server down, wrong
model name, timeout, a stream cut in the middle, the server killed mid-reply) with their messages and
what is stored.

    python -m pytest tests/test_openai_backend.py

Needs `transformers[serving]` (openai, fastapi, uvicorn; pinned in requirements.txt). The server is
started offline with the tiny test model (about 20 s on two cores).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mvp.model.dialogue import PlainFormat
from mvp.model.engine import GenerationError, GenerationParams

openai = pytest.importorskip("openai", reason="the openai backend needs `pip install transformers[serving]`")

from mvp.model.openai_backend import (  # noqa: E402
    EstimatedChatFormat,
    LocalServer,
    OpenAIEngine,
    estimate_tokens,
    free_port,
)

MESSAGES = [
    {"role": "system", "content": "你是一名温和、专业的心理咨询师。"},
    {"role": "user", "content": "我最近总是睡不着，心情很低落。"},
]
LONG = GenerationParams(max_new_tokens=600, temperature=1.0, seed=7)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    srv = LocalServer(tiny_model_dir, log=log, threads=1)  # steadier on 2 shared cores
    try:
        srv.start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"transformers serve cannot start here: {exc}")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def engine(server):
    return OpenAIEngine(server.base_url, server.model, timeout_s=60)


# -- against the real server --------------------------------------------------------------------
def test_streaming_chat_returns_text_and_metadata(engine):
    assert engine.info["backend"] == "openai" and engine.info["token_counter"] == "tokenizer"
    assert engine.budget.context_tokens == 1024  # the tiny model's max_position_embeddings
    gen = engine.start(MESSAGES, GenerationParams(max_new_tokens=24, temperature=0.9, seed=3))
    deltas = list(gen)
    result = gen.result
    assert len(deltas) > 1 and "".join(deltas) == result.text == gen.text
    assert result.finish_reason in ("stop", "length") and 0 < result.new_tokens <= 24
    # the server's usage: the prompt it rendered with the same chat template we budget with
    assert result.prompt_tokens == engine.count_tokens(engine.format.render(MESSAGES))
    assert 0 < result.ttft_s < result.total_s
    assert result.params["seed"] == 3 and result.model["served_name"] == engine.model
    assert engine.dialect == "transformers"  # detected from the server's refusal of vLLM's field
    # the same seed gives the same reply: the sampling parameters reach the server
    again = engine.generate(MESSAGES, GenerationParams(max_new_tokens=24, temperature=0.9, seed=3))
    assert again.text == result.text


def test_end_of_turn_ids_go_with_the_generation_config(engine):
    # transformers serve --continuous-batching does not merge the model's eos into a request's
    # generation_config: without these ids the demo model ran past <|im_end|> into a made-up next turn.
    config = json.loads(engine.request_kwargs(GenerationParams(), "transformers")["extra_body"]["generation_config"])
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in config["eos_token_id"] and config["pad_token_id"] == engine.tokenizer.pad_token_id


def test_plain_format_uses_the_completions_endpoint(server):
    plain = OpenAIEngine(server.base_url, server.model, prompt_format=PlainFormat(), timeout_s=60)
    result = plain.generate(MESSAGES, GenerationParams(max_new_tokens=8, temperature=0))
    # the raw 病人：/医生： prompt was sent as is (a chat template would add tokens)
    assert result.prompt_tokens == plain.count_tokens(plain.format.render(MESSAGES))
    assert result.new_tokens > 0 and result.finish_reason in ("stop", "length")


def test_cancel_closes_the_stream(engine):
    gen = engine.start(MESSAGES, LONG)
    for _ in gen:
        gen.cancel()
    result = gen.result
    assert result.finish_reason == "cancelled" and 0 < result.new_tokens < 100
    assert result.total_s < 10


def test_wrong_model_name_is_a_clear_error(server):
    wrong = OpenAIEngine(server.base_url, "counsel-v9", timeout_s=30)
    gen = wrong.start(MESSAGES, GenerationParams(max_new_tokens=4))
    with pytest.raises(GenerationError, match="没有名为 'counsel-v9' 的模型") as info:
        list(gen)
    assert server.model in str(info.value) and gen.result is None


def test_factory_reads_the_key_from_the_named_variable_and_versions_reopen(server, monkeypatch, tmp_path):
    from mvp.app.config import load_config
    from mvp.model.factory import EngineSettings, build_engine
    from mvp.store import Store

    monkeypatch.setenv("COUNSEL_KEY", "secret-123")
    config = load_config(["--backend", "openai", "--base-url", server.base_url, "--model", server.model,
                          "--api-key-env", "COUNSEL_KEY", "--prompt-format", "plain"])
    settings = EngineSettings.from_config(config)
    engine = build_engine(settings)
    assert engine.client.api_key == "secret-123" and isinstance(engine.format, PlainFormat)
    store = Store(tmp_path / "f.db")
    info = engine.info
    vid = store.register_model_version(info["base_model"], info["adapter"], info["quantization"], info["backend"],
                                       info["served_name"], info["base_url"])
    version = store.get_model_version(vid)
    assert (version["backend"], version["served_name"], version["base_url"]) == ("openai", server.model, server.base_url)
    again = build_engine(settings.for_version(version))  # what the blind arena loads for a served opponent
    assert isinstance(again.format, PlainFormat)  # the opponent keeps the primary's prompt format
    assert again.generate(MESSAGES, GenerationParams(max_new_tokens=4, temperature=0)).new_tokens > 0


# -- failures without a server ------------------------------------------------------------------
def test_server_down_is_a_clear_error():
    down = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "m", timeout_s=5, probe=False)
    started = time.monotonic()
    with pytest.raises(GenerationError, match="无法连接模型服务"):
        down.generate(MESSAGES)
    assert time.monotonic() - started < 5  # no retries with back-off while a clinician waits


def test_silent_server_times_out():
    with socket.socket() as sock:  # accepts connections (backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        silent = OpenAIEngine(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", "m", timeout_s=1, probe=False)
        with pytest.raises(GenerationError, match="超过 1 秒没有响应"):
            silent.generate(MESSAGES)


class _FakeSSE(BaseHTTPRequestHandler):
    """Streams two chat chunks, then (mode) stalls, or drops the connection mid-body."""

    protocol_version = "HTTP/1.1"
    mode = "cut"
    bodies: list = []  # request bodies, for the tests that read what was sent

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for text in ("你好，", "我在听。"):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            data = f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        if self.mode == "finish":  # a complete reply
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            data = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
            self.wfile.flush()
        if self.mode == "stall":
            time.sleep(30)
        elif self.mode == "clean-end":  # a well-formed end of body, but no finish_reason
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def fake_server():
    servers = []

    def start(mode):
        handler = type("Handler", (_FakeSSE,), {"mode": mode, "bodies": []})
        start.bodies = handler.bodies
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("mode", ["cut", "clean-end"])
def test_stream_cut_mid_reply_is_an_error_not_a_reply(fake_server, mode):
    engine = OpenAIEngine(fake_server(mode), "m", timeout_s=5, probe=False, dialect="vllm")
    gen = engine.start(MESSAGES, GenerationParams(max_new_tokens=50))
    with pytest.raises(GenerationError, match="中途") as info:
        for _ in gen:
            pass
    assert "未保存" in str(info.value)
    assert gen.text == "你好，我在听。" and gen.result is None  # shown so far, but no finished reply


def test_served_prompt_carries_the_pinned_note_and_the_summary(fake_server):
    engine = OpenAIEngine(fake_server("finish"), "m", timeout_s=5, probe=False, dialect="vllm",
                          max_context_tokens=300)
    history = [MESSAGES[0]]
    for i in range(20):
        history += [{"role": "user", "content": f"第{i}轮：我最近工作压力很大，晚上总是睡不着。"},
                    {"role": "assistant", "content": "听起来你这段时间很辛苦，能具体说说吗？"}]
    history.append({"role": "user", "content": "我该怎么办？"})
    note, summary = "风险提示：来访者第 1 轮提到想死。", "来访者工作压力大，失眠。"
    result = engine.generate(history, GenerationParams(max_new_tokens=16), pinned=[note], summary=summary)
    sent = fake_server.bodies[-1]["messages"]
    assert [m["role"] for m in sent].count("system") == 1 and sent[0]["role"] == "system"
    assert note in sent[0]["content"] and summary in sent[0]["content"]
    assert sent[1:] == history[1:][result.first_visible:] and result.summary_used
    assert result.text == "你好，我在听。" and result.finish_reason == "stop"


def test_cancel_does_not_wait_for_a_stalled_server(fake_server):
    engine = OpenAIEngine(fake_server("stall"), "m", timeout_s=20, probe=False, dialect="vllm")
    gen = engine.start(MESSAGES, GenerationParams(max_new_tokens=50))
    started = time.monotonic()
    threading.Timer(0.5, gen.cancel).start()
    text = "".join(gen)
    assert time.monotonic() - started < 5
    assert gen.result.finish_reason == "cancelled" and text == gen.result.text == "你好，我在听。"


def test_service_does_not_store_a_cut_reply(fake_server, tmp_path):
    from mvp.app.service import EnginePool, Service, ServiceError
    from mvp.counsel.stages import load_stages
    from mvp.store import Store

    engine = OpenAIEngine(fake_server("cut"), "m", timeout_s=5, probe=False, dialect="vllm")
    store = Store(tmp_path / "f.db")
    store.add_user("wang", "pass-12345678", "clinician")
    info = engine.info
    vid = store.register_model_version(info["base_model"], backend="openai", served_name=info["served_name"],
                                       base_url=info["base_url"])
    service = Service(store, load_stages(), EnginePool(vid, engine))
    conv = service.new_conversation("wang")
    with pytest.raises(ServiceError, match="中途"):
        list(service.send("wang", conv["id"], "我睡不着"))
    assert [m["role"] for m in store.get_history(conv["id"], include_notices=False)] == ["user"]


# -- pure helpers -------------------------------------------------------------------------------
def test_request_kwargs_per_server_dialect():
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "m", probe=False)
    params = GenerationParams(temperature=0.5, top_p=0.8, max_new_tokens=64, repetition_penalty=1.2, seed=5)
    vllm = engine.request_kwargs(params, "vllm")
    assert vllm["extra_body"] == {"repetition_penalty": 1.2} and vllm["stream_options"] == {"include_usage": True}
    assert (vllm["temperature"], vllm["top_p"], vllm["max_tokens"], vllm["seed"]) == (0.5, 0.8, 64, 5)
    hf = engine.request_kwargs(params, "transformers")
    config = json.loads(hf["extra_body"]["generation_config"])
    assert config == {"do_sample": True, "temperature": 0.5, "top_p": 0.8, "max_new_tokens": 64,
                      "repetition_penalty": 1.2, "top_k": 0}
    greedy = json.loads(engine.request_kwargs(GenerationParams(temperature=0), "transformers")["extra_body"]["generation_config"])
    assert greedy["do_sample"] is False and "temperature" not in greedy and "top_k" not in greedy
    assert "extra_body" not in engine.request_kwargs(params, "openai")


def test_budget_without_a_local_tokenizer_uses_the_conservative_estimate():
    engine = OpenAIEngine("http://127.0.0.1:9/v1", "counsel-v2", probe=False, max_context_tokens=300)
    assert engine.tokenizer is None and engine.info["token_counter"] == "estimate"
    assert isinstance(engine.format, EstimatedChatFormat) and engine.budget.context_tokens == 300
    assert estimate_tokens("我最近睡不着") >= 6 and estimate_tokens("hello world") >= 4
    history = [MESSAGES[0]]
    for i in range(20):
        history += [{"role": "user", "content": f"第{i}轮：我最近工作压力很大，晚上总是睡不着。"},
                    {"role": "assistant", "content": "听起来你这段时间很辛苦，能具体说说吗？"}]
    history.append({"role": "user", "content": "我该怎么办？"})
    fit = engine.budget.fit(history, 64)
    assert fit.dropped_turns > 0 and fit.messages[0] == MESSAGES[0] and fit.messages[-1] == history[-1]
    assert estimate_tokens(fit.prompt) <= 300 - 64


def test_estimate_is_above_the_model_tokenizer(engine):
    from train.demo.tiny_lm import dialogue_texts, iter_dialogues

    texts = [t for _, t in zip(range(300), dialogue_texts(iter_dialogues()))]
    ours = sum(engine.count_tokens(t) for t in texts)
    assert sum(estimate_tokens(t) for t in texts) >= ours


# -- through the app ------------------------------------------------------------------------------
def _rows(db, sql, params=()):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_app_streams_from_the_server_stores_and_survives_a_killed_server(server, tiny_model_dir, tmp_path):
    from gradio_client import Client

    from mvp.store import Store
    from tests.live_app import LiveApp

    db = tmp_path / "feedback.db"
    Store(db).add_user("wang", "clinic-pass-123", "clinician")
    app = LiveApp(tiny_model_dir, db, tmp_path / "app.log", "--backend", "openai", "--base-url", server.base_url,
                  "--max-new-tokens", "500")  # long replies, so the server can be killed mid-stream
    try:
        wang = Client(app.url, auth=("wang", "clinic-pass-123"), verbose=False)
        conv = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
        reply = wang.predict(conversation_id=conv["id"], message="我最近总是睡不着。", stage_id="", api_name="/chat")
        assert reply["done"] is True and reply["status"] == "complete" and reply["text"]
        bot = _rows(db, "SELECT * FROM messages WHERE id = ?", (reply["message_id"],))[0]
        version = _rows(db, "SELECT * FROM model_versions WHERE id = ?", (bot["model_version_id"],))[0]
        assert version["backend"] == "openai" and version["served_name"] == str(tiny_model_dir)
        assert version["base_url"] == server.base_url
        metrics = json.loads(bot["metrics"])
        assert metrics["new_tokens"] > 0 and metrics["prompt_tokens"] > 0 and metrics["ttft_s"] > 0
        wang.predict(message_id=bot["id"], overall=4, empathy=3, professionalism=None, safety=None,
                     guidance=None, tags=[], comment="服务端模型", rewrite=None, api_name="/rate")
        rating = _rows(db, "SELECT *, json_extract(scores, '$.overall') AS overall FROM ratings WHERE message_id = ?", (bot["id"],))[0]
        assert rating["overall"] == 4 and rating["rater"] == "wang"

        # The server dies while a reply streams: a clear message, nothing stored as a reply.
        streamer = Client(app.url, auth=("wang", "clinic-pass-123"), verbose=False)
        for _ in range(5):  # the untrained model may end a reply early: catch one in flight
            conv2 = wang.predict(stage_id="", case_id="", api_name="/new_conversation")
            job = streamer.submit(conversation_id=conv2["id"], message="我很焦虑，怎么办？", stage_id="",
                                  api_name="/chat")
            deadline = time.monotonic() + 60
            while not any(o.get("text") for o in job.outputs() or []) and not job.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not job.done():
                break
        assert not job.done() and job.outputs(), "no reply was caught streaming"
        server.stop(kill=True)
        with pytest.raises(Exception, match="中途") as info:
            job.result(timeout=60)
        assert "Traceback" not in str(info.value)
        stored = _rows(db, "SELECT role, status FROM messages WHERE conversation_id = ?", (conv2["id"],))
        assert [m["role"] for m in stored] == ["user"]

        with pytest.raises(Exception, match="无法连接模型服务"):  # still down: the app says so and stays up
            wang.predict(conversation_id=conv2["id"], message="还在吗？", stage_id="", api_name="/chat")
        server.start()  # back on the same port: the next reply works without restarting the app
        again = wang.predict(conversation_id=conv2["id"], message="现在呢？", stage_id="", api_name="/chat")
        assert again["status"] == "complete"
    finally:
        app.stop()
