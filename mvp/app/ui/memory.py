"""The 会谈摘要 panel, the cut marker in the chat and the stage suggestion banner (issue 17).

`MemoryPanel` builds its components inside the layout's columns (`build_panel` beside the chat,
`build_banner` above it) and wires its own events (`wire`); layout.py only calls these. The chat marks
the first message the model still sees (`mark_cut`, used by `Handlers.chat_view`).
"""

from __future__ import annotations

import html

import gradio as gr

from . import render
from .common import info, user_errors, username

CUT_MARKER = "—— 以上内容已移出模型视野，由会谈摘要代替 ——"
CUT_CONTENT = f"<div class='cut-marker'>{CUT_MARKER}</div>"
AUTHOR_LABELS = {"extractive": "自动摘录（演示模型）", "model": "模型撰写", "carried": "上次会谈带入"}
CSS = """
#memory-panel {border:1px solid #9bb7d4;border-radius:6px;}
#stage-suggestion {background:#eef6ee;border:1px solid #7fb77f;border-radius:6px;}
.cut-marker {color:#8a5a00;font-size:0.85em;text-align:center;border-bottom:1px dashed #c9a227;padding-bottom:4px;}
"""
NO_SUMMARY = "还没有会谈摘要：对话变长、较早的轮次移出模型上下文时，会在这里自动生成；也可以先写好。"


def cut_message_id(history: list[dict]) -> int | None:
    """The first message the newest reply's model saw, when earlier turns were left out."""
    for m in reversed(history):
        if m["role"] == "assistant":
            context = (m.get("gen_params") or {}).get("context") or {}
            return context.get("first_message_id") if context.get("dropped_turns") else None
    return None


def mark_cut(messages: list[dict], ids: list, cut_id: int | None) -> tuple[list[dict], list]:
    """The chat with a marker line on top of the first message the model still sees (inside its
    bubble: a message of its own would merge into the bubble of the reply before it)."""
    if cut_id is None or cut_id not in ids:
        return messages, ids
    i = ids.index(cut_id)
    marked = {**messages[i], "content": f"{CUT_CONTENT}\n\n{messages[i]['content']}"}
    return messages[:i] + [marked] + messages[i + 1:], ids


def summary_info(view: dict) -> str:
    """Who wrote the summary, which turns it covers, which session of which case this is."""
    row, conversation = view["summary"], view["conversation"]
    session = f"第 {view['session_no']} 次会谈 · 个案 {html.escape(str(view['case_key']))}"
    if row is None:
        return f"{session}\n\n{NO_SUMMARY}"
    author = AUTHOR_LABELS.get(row["author_kind"]) or f"临床人员 {html.escape(row['author'])} 修改"
    base = (row.get("state") or {}).get("based_on")
    if base and row["author_kind"] == "extractive":  # the clinician's (or model's) text, with later turns added
        by = "临床人员 " + html.escape(base["author"]) if base["author_kind"] == "clinician" else AUTHOR_LABELS.get(base["author_kind"], "")
        author = f"{by} 的版本 + 自动补充"
    covers = (f"覆盖第 {row['first_turn']}–{row['last_turn']} 轮" if row["last_turn"]
              else f"来自对话 #{row['source_conversation_id']}" if row.get("source_conversation_id") else "尚未覆盖任何轮次")
    seen = f" · 模型已看不到最早的 {view['dropped_turns']} 轮" if view["dropped_turns"] else ""
    return f"{session}\n\n**{author}** · {covers}{seen} · {render.local_time(row['created_at'])}" + (
        " · 演示对话" if conversation.get("is_demo") else "")


def suggestion_text(view: dict, stages) -> str:
    s = view["suggestion"]
    reasons = "；".join((s["detail"] or {}).get("reasons") or []) or "本阶段的退出信号已满足"
    return (f"**建议进入下一阶段：{html.escape(render.stage_name(stages, s['to_stage']))}**"
            f"（理由：{render.show(reasons)}）。接受后从下一轮起使用新阶段的指令。")  # a model's reason: shown inert


class MemoryPanel:
    def __init__(self, handlers):
        self.h = handlers
        self.service = handlers.service

    # -- components ---------------------------------------------------------------------------------
    def build_panel(self) -> None:
        with gr.Group(elem_id="memory-panel"):
            gr.Markdown("**会谈摘要**（代替已移出模型上下文的较早对话；修改后模型从下一轮起看到你的版本）")
            self.info = gr.Markdown(NO_SUMMARY, elem_id="summary-info")
            self.text = gr.Textbox(show_label=False, lines=7, max_lines=16, elem_id="summary-text",
                                   placeholder="主诉：…\n睡眠：…\n已约定：…")
            self.risk = gr.Markdown(elem_id="summary-risk")
            with gr.Row():
                self.save = gr.Button("保存修改", elem_id="summary-save", size="sm", min_width=80)
                self.new_session = gr.Button("新会谈（同一来访者）", elem_id="new-session", size="sm", min_width=120)

    def build_banner(self) -> None:
        with gr.Group(visible=False, elem_id="stage-suggestion") as self.banner:
            self.banner_text = gr.Markdown(elem_id="stage-suggestion-text")
            with gr.Row():
                self.accept = gr.Button("接受", variant="primary", elem_id="stage-accept", size="sm", min_width=60)
                self.dismiss = gr.Button("暂不", elem_id="stage-dismiss", size="sm", min_width=60)

    @property
    def outputs(self) -> list:
        return [self.info, self.text, self.risk, self.banner, self.banner_text]

    def view(self, name, cid) -> tuple:
        if cid is None:
            return NO_SUMMARY, "", "", gr.update(visible=False), ""
        view = self.service.memory_view(name, cid)
        row = view["summary"]
        risk = f"⚠ {render.show(view['risk'])}" if view["risk"] else ""  # client words: no HTML, no links or images
        pending = view["suggestion"] is not None
        return (summary_info(view), row["content"] if row else "", risk, gr.update(visible=pending),
                suggestion_text(view, self.service.stages) if pending else "")

    # -- handlers -----------------------------------------------------------------------------------
    @user_errors
    def on_refresh(self, cid, request: gr.Request):
        return self.view(username(request), cid)

    @user_errors
    def on_save(self, cid, text, request: gr.Request):
        name = username(request)
        if cid is None:
            info("还没有对话：先开始对话，再保存会谈摘要。")
            return self.view(name, cid)
        self.service.correct_summary(name, cid, text)
        info("会谈摘要已保存：模型从下一轮起使用修改后的摘要")
        return self.view(name, cid)

    def make_answer(self, accept: bool):
        @user_errors
        def on_answer(cid, request: gr.Request):
            name = username(request)
            if cid is None:
                return (gr.update(), gr.update(), *self.view(name, cid))
            conversation = self.service.answer_suggestion(name, cid, accept)
            info(f"已进入：{render.stage_name(self.service.stages, conversation['stage_id'])}" if accept
                 else "好的，暂不进入下一阶段（稍后满足条件时会再提示）")
            return (conversation["stage_id"], render.conversation_info(self.service.stages, conversation),
                    *self.view(name, cid))

        return on_answer

    @user_errors
    def on_new_session(self, cid, request: gr.Request):
        if cid is None:
            info("请先打开一段对话，再为同一来访者开始新会谈。")
            return (gr.update(),) * 11
        conversation = self.service.new_session(username(request), cid)
        info(f"已开始第 {conversation['session_no']} 次会谈：沿用上次的阶段和会谈摘要")
        return self.h.on_open(conversation["id"], request)

    def wire(self, *, conv_id, stage, conv_info, open_outputs, after, private) -> None:
        """Connect the panel: `after` are the events after which the panel is refreshed."""
        for event in after:
            event.then(self.on_refresh, [conv_id], self.outputs, **private)
        self.save.click(self.on_save, [conv_id, self.text], self.outputs, **private)
        for button, accept in ((self.accept, True), (self.dismiss, False)):
            button.click(self.make_answer(accept), [conv_id], [stage, conv_info, *self.outputs], **private)
        self.new_session.click(self.on_new_session, [conv_id], open_outputs, **private).then(
            self.on_refresh, [conv_id], self.outputs, **private)
