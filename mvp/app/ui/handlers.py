"""The UI's event handlers, one method each, in the style of Gradio's demos: take the components'
values (and the request, for the logged-in user), make one service call, return what to show.

They are methods of `Handlers` only to share the one `Service`; nothing here is wired to a
component (that is `layout.py`) and nothing decides anything (that is the service). A rating's
scores arrive as one value per dimension of config/rating.yaml, in that order.
"""

from __future__ import annotations

import html

import gradio as gr

from mvp.app.service import Service
from mvp.counsel.cases import get_case
from mvp.store import ValidationError
from mvp.store.validation import check_message

from . import render
from .memory import cut_message_id, mark_cut
from .common import info, throttled, user_errors, user_errors_stream, username, warning

SAME_MODEL = ("同一模型（两次采样）", 0)
NO_CONVERSATION = "还没有对话：先在下方输入一条来访者消息（或点击“新对话”），再{what}。"
IN_SCREENING = "量表筛查进行中：请先回答完问题（或点击“放弃筛查”），再{what}。"
SKIP = gr.update()


class Handlers:
    def __init__(self, service: Service):
        self.service = service
        self.dimensions = tuple(service.rating.dimensions)

    # -- helpers ---------------------------------------------------------------------------------
    def chat_view(self, name, cid):
        """The chat as shown (each reply with its stage) and the rating dropdown (every reply of
        every turn, alternatives included, with its stage and whether this account rated it)."""
        service = self.service
        history = service.history(name, cid)
        alternatives = {m["id"]: service.alternatives(name, m["id"]) for m in history if m["role"] == "assistant"}
        messages, ids = render.to_chatbot(history, service.stages, alternatives)
        messages, ids = mark_cut(messages, ids, cut_message_id(history))  # where the model's view starts
        choices = render.rate_choices(history, service.stages, alternatives, service.rated_ids(name, cid))
        return messages, ids, choices

    def refresh_view(self, name, cid):
        messages, ids, choices = self.chat_view(name, cid)
        return messages, ids, gr.update(choices=choices, value=choices[0][1] if choices else None)

    def screening_running(self, name, cid) -> bool:
        state = self.service.screening_state(name, cid)
        return bool(state.get("active")) and not state.get("paused")

    def conversation_list(self, name, cid=None):
        user = self.service.user(name)
        choices = render.conversation_choices(self.service.conversations(name), self.service.stages,
                                              show_owner=user["role"] == "admin")
        return gr.update(choices=choices, value=cid if cid in {c[1] for c in choices} else None)

    def screening_view(self, name, cid):
        state = self.service.screening_state(name, cid) if cid is not None else None
        return render.screening_view(state, self.service.instruments)

    # -- session and conversation ------------------------------------------------------------------
    @user_errors
    def on_load(self, request: gr.Request):
        service = self.service
        user = service.user(username(request))
        admin = user["role"] == "admin"
        versions = [(f"版本 {v['id']}" + ("（候选）" if v.get("status") == "candidate" else ""), v["id"])
                    for v in service.model_versions()
                    if v["id"] != service.engines.primary_id and v.get("status") != "refused"]
        return (
            f"当前用户：{html.escape(user['name'])} · {render.ROLE_LABELS[user['role']]}",
            gr.update(visible=admin),
            gr.update(visible=admin),
            gr.update(visible=admin),
            gr.update(visible=admin),
            gr.update(choices=[SAME_MODEL] + versions),
            gr.update(**self.conversation_list(user["name"]),
                      label="全部对话（所有临床人员的，最近的在前）" if admin else "我的对话（最近的在前）"),
        )

    @user_errors
    def on_conversations(self, cid, request: gr.Request):
        return self.conversation_list(username(request), cid)

    @user_errors
    def on_open(self, cid, request: gr.Request):
        """Open a conversation from the list: its chat, the ratings dropdown, stage and screening."""
        if not cid:
            return (SKIP,) * 11
        name = username(request)
        conversation = self.service.conversation(name, cid)
        messages, ids, target = self.refresh_view(name, conversation["id"])
        summary, table = self.screening_view(name, conversation["id"])
        info_text = render.conversation_info(self.service.stages, conversation)
        return (conversation["id"], messages, ids, target, info_text, conversation["stage_id"], summary, table,
                gr.update(visible=False), "", self.conversation_list(name, conversation["id"]))

    @user_errors
    def on_stage(self, stage_id, cid, request: gr.Request):
        st = self.service.stages.get(stage_id)
        if cid is None:
            return st.description, st.instruction, SKIP
        conversation = self.service.conversation(username(request), cid)
        if conversation["stage_id"] != st.id:
            conversation = self.service.set_stage(username(request), cid, st.id)
        return st.description, st.instruction, render.conversation_info(self.service.stages, conversation)

    @user_errors
    def on_new(self, stage_id, case_id, request: gr.Request):
        name = username(request)
        conversation = self.service.new_conversation(name, stage_id, case_id or None)
        info_text = render.conversation_info(self.service.stages, conversation)
        first = get_case(case_id).client_lines[0] if case_id else ""
        return (conversation["id"], [], [], gr.update(choices=[], value=None), info_text, first, (1 if case_id else 0),
                gr.update(visible=False), "", self.conversation_list(name, conversation["id"]),
                *render.screening_view(None, self.service.instruments))

    @user_errors
    def on_fill(self, case_id, pos):
        c = get_case(case_id) if case_id else None
        if c is None:
            info("请先在左侧“示例个案”中选择一个个案，再填入它的下一句。")
            return SKIP, pos
        if pos >= len(c.client_lines):
            info("这个个案的来访者台词已经用完")
            return gr.update(), pos
        return c.client_lines[pos], pos + 1

    # -- chat --------------------------------------------------------------------------------------
    @user_errors_stream
    def on_send(self, text, cid, stage_id, request: gr.Request):
        service = self.service
        name = username(request)
        try:
            text = check_message(text)  # the one message validator; the service applies it again
        except ValidationError as exc:
            warning(str(exc))
            yield gr.update(), gr.update(), cid, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            return
        info = gr.update()
        if cid is None:
            conversation = service.new_conversation(name, stage_id)
            cid = conversation["id"]
            info = render.conversation_info(service.stages, conversation)
        history = service.history(name, cid)
        shown, shown_ids = render.to_chatbot(history)
        shown, _ = mark_cut(shown, shown_ids, cut_message_id(history))  # the marker stays while it streams
        shown = shown + [{"role": "user", "content": render.show(text)}, {"role": "assistant", "content": "…"}]
        yield shown, "", cid, gr.update(), gr.update(), "", gr.update(visible=False), info
        notes = []
        for event in throttled(service.send(name, cid, text, stage_id)):
            shown[-1] = {"role": "assistant", "content": render.show(event.text) or "…"}
            if event.done:
                notes = event.notices
            yield shown, "", cid, gr.update(), gr.update(), "", gr.update(), gr.update()
        messages, ids, choices = self.refresh_view(name, cid)
        yield messages, "", cid, ids, choices, "　".join(f"提示：{n}" for n in notes), gr.update(), gr.update()

    @user_errors_stream
    def on_regen(self, cid, request: gr.Request):
        name = username(request)
        if cid is None:
            info(NO_CONVERSATION.format(what="重新生成"))
            yield SKIP, SKIP, SKIP, SKIP
            return
        if self.screening_running(name, cid):
            info(IN_SCREENING.format(what="重新生成"))
            yield SKIP, SKIP, SKIP, SKIP
            return
        shown, _ = render.to_chatbot(self.service.history(name, cid))
        if shown and shown[-1]["role"] == "assistant":
            shown = shown[:-1]
        shown.append({"role": "assistant", "content": "…"})
        notes = []
        for event in throttled(self.service.regenerate(name, cid)):
            shown[-1] = {"role": "assistant", "content": render.show(event.text) or "…"}
            notes = event.notices if event.done else notes
            yield shown, gr.update(), gr.update(), gr.update()
        messages, ids, choices = self.refresh_view(name, cid)
        yield messages, ids, choices, "提示：已重新生成。之前的回复仍保留，可在右侧“要评分的回复”中查看和评分（标为“其他回复”）。" + "".join(f"　提示：{n}" for n in notes)

    @user_errors
    def on_stop(self, cid, request: gr.Request):
        if cid is not None:
            self.service.stop(username(request), cid)

    # -- screening ---------------------------------------------------------------------------------
    @user_errors
    def on_screening_refresh(self, cid, request: gr.Request):
        return self.screening_view(username(request), cid)

    @user_errors
    def on_start_screening(self, cid, inst, request: gr.Request):
        name = username(request)
        if cid is None:
            info(NO_CONVERSATION.format(what="开始量表筛查"))
            return (SKIP,) * 6
        if self.service.screening_state(name, cid).get("active"):
            info("这个对话里已有进行中的筛查：请先回答完，或点击“放弃筛查”后再开始新的。")
            return (SKIP,) * 6
        self.service.start_screening(name, cid, inst)
        messages, ids, choices = self.refresh_view(name, cid)
        summary, table = self.screening_view(name, cid)
        stage_id = self.service.store.get_conversation(cid)["stage_id"]
        return messages, ids, choices, summary, table, stage_id

    @user_errors
    def on_abandon_screening(self, cid, request: gr.Request):
        name = username(request)
        if cid is None or not self.service.screening_state(name, cid).get("active"):
            info("这个对话里没有进行中的量表筛查。")
            return SKIP, SKIP
        self.service.abandon_screening(name, cid)
        info("已放弃这次筛查：已回答的题目会保留，之后的消息按普通对话回复。")
        return self.screening_view(name, cid)

    @user_errors
    def on_fix(self, cid, item_no, score, request: gr.Request):
        name = username(request)
        state = self.service.screening_state(name, cid) if cid is not None else None
        if not state or not state["assessment_id"]:
            info("这个对话还没有量表筛查：开始筛查并回答后，才能更正题目得分。")
            return SKIP, SKIP
        if item_no is None or score is None:
            info("请填写题号并选择正确得分，再保存更正。")
            return SKIP, SKIP
        self.service.correct_item(name, state["assessment_id"], int(item_no), int(score))
        info("更正已保存")
        return self.screening_view(name, cid)

    # -- judgements --------------------------------------------------------------------------------
    @user_errors
    def on_compare(self, cid, opp, request: gr.Request):
        if cid is None:
            info(NO_CONVERSATION.format(what="比较两条回复"))
            return SKIP, SKIP, SKIP, SKIP
        if self.screening_running(username(request), cid):
            info(IN_SCREENING.format(what="比较两条回复"))
            return SKIP, SKIP, SKIP, SKIP
        result = self.service.compare(username(request), cid, opp or None)
        return result, result["text_a"], result["text_b"], gr.update(visible=True)

    def make_choose(self, choice):
        @user_errors
        def on_choose(state, cid, request: gr.Request):
            if not state:
                info("请先点击“比较两条回复”，再选择哪条更好。")
                return (SKIP,) * 6
            name = username(request)
            self.service.choose(name, state["message_a"], state["message_b"], choice)
            messages, ids, choices = self.refresh_view(name, cid)
            return {}, gr.update(visible=False), messages, ids, choices, f"已记录：{render.CHOICE_LABELS[choice]}"

        return on_choose

    @user_errors
    def on_like(self, ids, evt: gr.LikeData, request: gr.Request):
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if index is None or index >= len(ids) or ids[index] is None:
            raise gr.Error("找不到这条回复")
        value = 1 if evt.liked is True else (-1 if evt.liked is False else 0)
        self.service.thumb(username(request), ids[index], value)
        info({1: "已点赞", -1: "已点踩", 0: "已取消"}[value])

    @user_errors
    def on_target(self, request: gr.Request, message_id):
        """The selected reply's current rating: one score per dimension, tags, comment, rewrite, status."""
        empty = [None] * len(self.dimensions) + [[], "", "", ""]
        if not message_id:
            return empty
        rating = self.service.ratings_of(username(request), message_id)
        if not rating:
            return empty
        return [rating.get(d) for d in self.dimensions] + [
            rating.get("tags") or [], rating.get("comment") or "", rating.get("rewrite") or "",
            f"已载入你的第 {rating['revision']} 次评分，修改后再次提交即为新版本。",
        ]

    @user_errors
    def on_submit(self, request: gr.Request, message_id, *values):
        """values: one score per dimension (config order), then tags, comment, rewrite."""
        if not message_id:
            return "还没有可评分的回复：先发送一条消息，等模型回复后再评分。"
        n = len(self.dimensions)
        scores, (tag_values, comment_text, rewrite_text) = values[:n], values[n:]
        fields = {k: int(v) for k, v in zip(self.dimensions, scores) if v is not None}
        result = self.service.rate(
            username(request), message_id, **fields, tags=tag_values or [],
            comment=comment_text or None, rewrite=rewrite_text or None,
        )
        return f"已保存（第 {result['revision']} 版）"

    # -- admin -------------------------------------------------------------------------------------
    @user_errors
    def on_dashboard(self, request: gr.Request):
        return render.dashboard_view(self.service.dashboard(username(request)))

    @user_errors
    def on_ranking(self, request: gr.Request):
        return render.ranking_view(self.service.version_ranking(username(request)))

    @user_errors
    def on_versions(self, request: gr.Request):
        return render.versions_frame(self.service.versions(username(request)))

    @user_errors
    def on_export(self, include_demo, request: gr.Request):
        result = self.service.export_training_data(username(request), include_demo=bool(include_demo))
        return f"已导出到 {result['path']}\n\n{result['summary']}"

    @user_errors
    def on_flags(self, include_reviewed, category, request: gr.Request):
        """The review queue: the table, its rows (for a click on one), and a cleared selection."""
        rows = self.service.review_queue(username(request), include_reviewed=bool(include_reviewed))
        if category:
            rows = [r for r in rows if category in r["categories"]]
        return render.review_frame(rows), rows, None, "点击表格中的一行以选择它。"

    def on_flag_select(self, rows, evt: gr.SelectData):
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not rows or index is None or index >= len(rows):
            return None, "点击表格中的一行以选择它。"
        row = rows[index]
        return row, (f"已选择：对话 #{row['conversation_id']}（{html.escape(row.get('user_name') or '')}）· "
                     f"{render.category_names(row['categories'])} · {render.local_time(row['created_at'])}")

    @user_errors
    def on_review(self, row, note, include_reviewed, category, request: gr.Request):
        if not row:
            info("请先在表格中点击要复核的那一行，再标记为已复核。")
            return SKIP, SKIP, SKIP, SKIP, SKIP
        n = self.service.review_flags(username(request), row["flag_ids"], note or None)
        info(f"已标记为已复核（{n} 个标记）")
        return (*self.on_flags(include_reviewed, category, request), "")

    @user_errors
    def on_flag_open(self, row, request: gr.Request):
        """Open the selected row's conversation in the chat tab; the last output is the flagged message's
        place in the chat (-1: not shown), which FOCUS_MESSAGE_JS scrolls to and highlights."""
        if not row:
            info("请先在表格中点击一行，再打开它的对话。")
            return (SKIP,) * 13
        opened = self.on_open(row["conversation_id"], request)
        ids = opened[2] if isinstance(opened[2], list) else []
        focus = ids.index(row["message_id"]) if row.get("message_id") in ids else -1
        return (gr.Tabs(selected="chat"), *opened, focus)

    @user_errors
    def on_audit(self, request: gr.Request):
        return render.audit_frame(self.service.audit(username(request)))
