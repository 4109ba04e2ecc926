"""What went wrong with a model server, in words a clinician can act on.

`explain()` turns any failure of a request to an OpenAI-compatible server (server down, wrong model
name, timeout, refused key, a prompt over the context, a stream cut in the middle) into one Chinese
sentence that says what happened and what to do; `OpenAIEngine` raises it as a `GenerationError`.
"""
from __future__ import annotations

from collections.abc import Callable


class StreamCut(Exception):
    """The stream ended without a finish_reason (the server went away between events)."""


def server_detail(exc) -> str:
    """The server's own error text from an openai APIStatusError (FastAPI `detail`, OpenAI `error`)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error") or body
        if isinstance(detail, dict):
            detail = detail.get("message") or detail
        return str(detail)[:300]
    return str(getattr(exc, "message", exc))[:300]


def explain(exc: BaseException, *, base_url: str, model: str, timeout_s: float,
            list_models: Callable[[], list[dict] | None], partial: str = "") -> str:
    """A message for the clinician saying what went wrong with the model server and what to do.

    `list_models` is asked only for a 400/404, to name the models the server does have.
    """
    import openai

    where = f"模型服务（{base_url}）"
    lost = f"（已生成的 {len(partial)} 个字未保存）" if partial else ""
    if isinstance(exc, StreamCut):
        return f"与{where}的连接在回复中途断开{lost}：请确认服务仍在运行后重新生成"
    if isinstance(exc, openai.APITimeoutError):
        return f"{where}超过 {timeout_s:g} 秒没有响应{lost}：服务可能过载或已停止，请稍后重试"
    if isinstance(exc, openai.APIConnectionError):
        return f"无法连接{where}：请确认服务已启动（vllm serve / transformers serve）且地址正确，然后重试"
    if isinstance(exc, openai.AuthenticationError):
        return f"{where}拒绝了 API key：请检查 --api-key-env 指定的环境变量"
    if isinstance(exc, openai.APIStatusError):
        detail = server_detail(exc)
        low = detail.lower()
        names = [str(m.get("id")) for m in (list_models() or [])] if exc.status_code in (400, 404) else []
        if (names and model not in names) or exc.status_code == 404 or "pinned" in low:
            available = f"；服务端可用的模型：{', '.join(names)}" if names else ""
            return f"{where}没有名为 {model!r} 的模型{available}。请用 --model 指定服务端的模型名"
        if "context" in low and ("length" in low or "maximum" in low):
            return f"提示超出了{where}的模型上下文：请用 --max-context-tokens 设置更小的预算（服务端：{detail}）"
        if exc.status_code >= 500:
            return f"{where}内部出错（HTTP {exc.status_code}）{lost}：{detail}"
        return f"{where}拒绝了请求（HTTP {exc.status_code}）：{detail}"
    if isinstance(exc, openai.APIError):
        return f"{where}在生成时出错{lost}：{getattr(exc, 'message', exc)}"
    return f"调用{where}失败{lost}：{type(exc).__name__}: {exc}"
