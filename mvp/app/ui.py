"""The clinician web app (Gradio): wires components and events to `mvp.app.service.Service`.

Nothing here decides anything: every handler turns its inputs into one service call, shows the
result, and turns a user error into a toast (`gr.Error`), never a traceback. The named API endpoints
(`/new_conversation`, `/chat`, `/regenerate`, `/stop`, `/rate`, `/thumb`, `/compare`, `/choose`,
`/history`, `/stages`, `/start_screening`, `/screening`, `/correct_item`, `/flags`, `/review_flag`,
`/delete_conversation`) call the same service methods
with the logged-in user, for gradio_client. Only this module imports gradio.
"""

from __future__ import annotations

import functools
import html
import time
from typing import Any

import gradio as gr

from mvp.counsel.cases import get_case, load_cases
from mvp.model.engine import GenerationParams
from mvp.app.service import DIMENSIONS, USER_ERRORS, Service

DISCLAIMER = (
    "**注意**：研究演示系统，不是医疗或心理咨询服务。回复由语言模型生成，可能不准确；"
    "如遇危机，请拨打 120 / 110 或心理援助热线 12356。"
)
CSS = """
#disclaimer {background:#fff4e5;border:1px solid #f0b35a;border-radius:6px;padding:6px 12px;}
#disclaimer p {margin:0;color:#7a4b00;}
#demo-notice p {color:#8a1c1c;}
"""
SCORE_CHOICES = [1, 2, 3, 4, 5]
CHOICE_LABELS = {"a": "A 更好", "b": "B 更好", "tie": "差不多", "both_bad": "都不好"}


def user_errors(fn):
    """Turn a user error into a toast; keep unexpected errors out of the page as well."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # never show a traceback to a clinician
            raise gr.Error(f"内部错误（{type(exc).__name__}），请重试或联系管理员") from exc

    return wrapper


def user_errors_stream(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:
            raise gr.Error(f"内部错误（{type(exc).__name__}），请重试或联系管理员") from exc

    return wrapper


SERVED_MODEL_SLOTS = 8  # concurrent replies sent to an OpenAI-compatible server (it batches them)
STREAM_INTERVAL_S = 0.05  # at most one streamed update per 50 ms: each update costs the server time


def throttled(events):
    """Pass on at most one event per STREAM_INTERVAL_S, and always the last one."""
    last_sent = 0.0
    pending = None
    try:
        for event in events:
            now = time.monotonic()
            if event.done or now - last_sent >= STREAM_INTERVAL_S:
                pending = None
                last_sent = now
                yield event
            else:
                pending = event
        if pending is not None:
            yield pending
    finally:
        events.close()  # a cancelled request stops the model now (the reply is kept as interrupted)


def username(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def show(text: str) -> str:
    """Message text for the chatbot: HTML is escaped so it is shown as text and never runs."""
    return html.escape(text or "", quote=False)


def to_chatbot(history: list[dict]) -> tuple[list[dict], list[int | None]]:
    """Store history -> (Chatbot messages, the message id of each one)."""
    messages, ids = [], []
    for m in history:
        if m["role"] not in ("user", "assistant"):
            continue
        content = show(m["content"])
        if m["role"] == "assistant" and m.get("status") == "interrupted":
            content += "\n\n*（已停止生成）*"
        messages.append({"role": m["role"], "content": content})
        ids.append(m["id"])
    return messages, ids


def rate_choices(history: list[dict]) -> list[tuple[str, int]]:
    """Dropdown entries for every assistant reply on the active path (newest first)."""
    out = []
    n = 0
    for m in history:
        if m["role"] == "assistant":
            n += 1
            snippet = " ".join(m["content"].split())[:28]
            out.append((f"第 {n} 条回复：{snippet}", m["id"]))
    return list(reversed(out))


def model_banner(info: dict) -> str:
    adapter = info.get("adapter") or "无"
    text = (
        f"**当前模型**：{html.escape(str(info.get('base_model')))} · 适配器：{html.escape(str(adapter))}"
        f" · 量化：{info.get('quantization')} · 设备：{info.get('device', '-')}"
    )
    if info.get("is_demo"):
        text += (
            "\n\n<span id='demo-notice'>正在使用**内置演示模型**（约 130 万参数，离线训练于合成对话）："
            "回复仅用于体验产品流程，不具有临床意义。</span>"
        )
    return text


def build_ui(service: Service, model_info: dict) -> gr.Blocks:
    stages = service.stages
    cases = load_cases()
    tags = service.rating.tags
    dims = service.rating.dimensions

    # The in-process model generates one reply at a time (one queue slot, so two generations never
    # share a GPU by accident); a served model batches concurrent requests, so let them through.
    model_slots = 1 if model_info.get("backend", "inprocess") == "inprocess" else SERVED_MODEL_SLOTS

    with gr.Blocks(title="心理咨询大模型 MVP · 临床评测") as demo:
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        with gr.Row():
            gr.Markdown("## 心理咨询大模型 MVP · 临床评测")
            who = gr.Markdown(elem_id="who")
        gr.Markdown(model_banner(model_info), elem_id="model-info")
        conv_id = gr.State(None)
        msg_ids = gr.State([])
        cmp_state = gr.State({})
        case_pos = gr.State(0)

        with gr.Tabs():
            with gr.Tab("对话与评分", id="chat"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=230):
                        stage = gr.Dropdown(stages.choices(), value=stages.default.id, label="治疗阶段", elem_id="stage")
                        stage_desc = gr.Markdown(stages.default.description)
                        with gr.Accordion("本阶段的系统提示（模型看到的指令）", open=False):
                            stage_prompt = gr.Textbox(stages.default.instruction, show_label=False, interactive=False, lines=8, elem_id="stage-prompt")
                        case = gr.Dropdown([("（不使用）", "")] + [(c.title, c.id) for c in cases], value="", label="示例个案（可选，用于快速演示）", elem_id="case")
                        new_btn = gr.Button("开始新对话", variant="primary", elem_id="new")
                        conv_info = gr.Markdown("尚未开始对话：直接输入消息也会自动开始。", elem_id="conv-info")
                        with gr.Group():
                            gr.Markdown("**量表筛查**（评估阶段，由模型逐题提问）")
                            instrument = gr.Radio([(i.name, i.id) for i in service.instruments.values()],
                                                  value=next(iter(service.instruments)), show_label=False, elem_id="instrument")
                            start_scr = gr.Button("开始筛查", elem_id="start-screening")
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(elem_id="chatbot", height=480, label="对话（你扮演来访者）", buttons=["copy"])
                        notice = gr.Markdown(elem_id="notice")
                        with gr.Row():
                            msg = gr.Textbox(placeholder="以来访者的身份输入，回车发送", show_label=False, scale=5, lines=2, max_lines=8, elem_id="msg")
                            send = gr.Button("发送", variant="primary", scale=1, elem_id="send")
                        with gr.Row():
                            stop = gr.Button("停止", elem_id="stop")
                            regen = gr.Button("重新生成", elem_id="regen")
                            compare = gr.Button("比较两条回复", elem_id="compare")
                            fill = gr.Button("填入个案下一句", elem_id="fill")
                        with gr.Group(elem_id="screening-panel"):
                            scr_summary = gr.Markdown("尚未进行量表筛查。", elem_id="screening-summary")
                            scr_table = gr.Dataframe(
                                headers=["题号", "问题", "回答", "得分", "评分方式", "需复核", "临床更正"],
                                interactive=False, wrap=True, elem_id="screening-items",
                                column_widths=["7%", "30%", "29%", "8%", "12%", "7%", "7%"],
                            )
                            with gr.Row():
                                fix_item = gr.Number(value=1, label="更正：题号", precision=0, minimum=1, maximum=9, elem_id="fix-item")
                                fix_score = gr.Radio([0, 1, 2, 3], label="正确得分（0-3）", elem_id="fix-score")
                                fix_btn = gr.Button("保存更正", elem_id="fix-btn")
                        opponent = gr.Dropdown([("同一模型（两次采样）", 0)], value=0, label="比较对象（盲评，不显示来源）", elem_id="opponent")
                        with gr.Group(visible=False, elem_id="compare-box") as compare_box:
                            gr.Markdown("**哪条回复更好？**（顺序随机，来源隐藏；选中的回复会继续对话）")
                            with gr.Row():
                                text_a = gr.Textbox(label="回复 A", interactive=False, lines=6, elem_id="cmp-a")
                                text_b = gr.Textbox(label="回复 B", interactive=False, lines=6, elem_id="cmp-b")
                            with gr.Row():
                                choice_btns = {c: gr.Button(label, elem_id=f"choose-{c}") for c, label in CHOICE_LABELS.items()}
                    with gr.Column(scale=2, min_width=280):
                        gr.Markdown("### 详细评分")
                        target = gr.Dropdown([], label="要评分的回复（可选任意一条）", elem_id="rate-target")
                        scores = {
                            d: gr.Radio(SCORE_CHOICES, label=f"{dims[d]['name']}（1-5）", info=dims[d].get("hint"), elem_id=f"score-{d}")
                            for d in DIMENSIONS
                        }
                        tag_box = gr.CheckboxGroup(tags, label="标签", elem_id="tags")
                        comment = gr.Textbox(label="评语", lines=2, elem_id="comment")
                        rewrite = gr.Textbox(label="更好的回复（专家改写）", lines=4, elem_id="rewrite")
                        submit = gr.Button("提交评分（可多次修改，以最新为准）", variant="primary", elem_id="submit-rating")
                        rate_status = gr.Markdown(elem_id="rate-status")

            with gr.Tab("数据看板", id="dashboard", visible=False) as dash_tab:
                refresh = gr.Button("刷新", elem_id="refresh-dashboard")
                counts = gr.Markdown(elem_id="counts")
                with gr.Row():
                    per_day = gr.BarPlot(x="day", y="ratings", title="每日评分数", elem_id="plot-per-day")
                    tags_plot = gr.BarPlot(x="tag", y="count", title="标签频次", elem_id="plot-tags")
                with gr.Row():
                    dims_plot = gr.BarPlot(x="dimension", y="mean", color="version", title="各模型版本各维度平均分", elem_id="plot-dims")
                    win_plot = gr.BarPlot(x="pair", y="win_rate", title="版本对比胜率", elem_id="plot-win")
                activity = gr.Dataframe(label="各临床人员：对话数、已评分回复、未评分回复", elem_id="activity")

            with gr.Tab("安全审查", id="review", visible=False) as review_tab:
                gr.Markdown("触发危机识别或回复安全检查的对话。复核后标记为已处理。")
                flags_table = gr.Dataframe(elem_id="flags", wrap=True)
                with gr.Row():
                    flag_id = gr.Number(label="标记 ID", precision=0, elem_id="flag-id")
                    flag_note = gr.Textbox(label="复核备注", elem_id="flag-note")
                    review_btn = gr.Button("标记为已复核", elem_id="review-btn")
                refresh_flags = gr.Button("刷新", elem_id="refresh-flags")

            with gr.Tab("模型版本与导出", id="versions", visible=False) as versions_tab:
                gr.Markdown("已登记的模型版本（`train.pipeline` 训练后自动登记）。在“对话与评分”中选择“比较对象”即可对两个版本做盲评。")
                versions_table = gr.Dataframe(elem_id="versions", wrap=True)
                refresh_versions = gr.Button("刷新", elem_id="refresh-versions")
                gr.Markdown("**导出训练数据**：把评分转换为 DPO / KTO / SFT 数据（TRL、LLaMA-Factory、BianQue 格式），默认去除个人信息。"
                            "完整流程见 `python -m train.pipeline`。")
                export_demo = gr.Checkbox(label="包含演示对话", value=False, elem_id="export-demo")
                export_btn = gr.Button("导出", elem_id="export-btn")
                export_out = gr.Textbox(label="导出结果", lines=8, interactive=False, elem_id="export-out")

            with gr.Tab("使用说明", id="help"):
                gr.Markdown(HELP)

        # -- handlers ------------------------------------------------------------------------------
        def conversation_info(conversation):
            info = f"对话 #{conversation['id']} · 开始于阶段：{stages.get(conversation['stage_id']).name}"
            return info + (" · 演示对话（不计入训练数据）" if conversation["is_demo"] else "")

        def refresh_view(name, cid):
            history = service.history(name, cid)
            messages, ids = to_chatbot(history)
            choices = rate_choices(history)
            return messages, ids, gr.update(choices=choices, value=choices[0][1] if choices else None)

        @user_errors
        def on_load(request: gr.Request):
            name = username(request)
            user = service.user(name)
            admin = user["role"] == "admin"
            versions = [(f"版本 {v['id']}", v["id"]) for v in service.model_versions() if v["id"] != service.engines.primary_id]
            role_label = {"admin": "管理员", "clinician": "临床评测", "demo": "演示账号（不能评分）"}[user["role"]]
            return (
                f"当前用户：{html.escape(user['name'])} · {role_label}",
                gr.update(visible=admin),
                gr.update(visible=admin),
                gr.update(visible=admin),
                gr.update(choices=[("同一模型（两次采样）", 0)] + versions),
            )

        @user_errors
        def on_stage(stage_id, cid, request: gr.Request):
            st = stages.get(stage_id)
            if cid is not None:
                service.set_stage(username(request), cid, st.id)
            return st.description, st.instruction

        @user_errors
        def on_new(stage_id, case_id, request: gr.Request):
            conversation = service.new_conversation(username(request), stage_id, case_id or None)
            info = conversation_info(conversation)
            first = get_case(case_id).client_lines[0] if case_id else ""
            return conversation["id"], [], [], gr.update(choices=[], value=None), info, first, (1 if case_id else 0), gr.update(visible=False), ""

        @user_errors
        def on_fill(case_id, pos):
            c = get_case(case_id) if case_id else None
            if c is None:
                raise gr.Error("请先选择一个示例个案")
            if pos >= len(c.client_lines):
                gr.Info("这个个案的来访者台词已经用完")
                return gr.update(), pos
            return c.client_lines[pos], pos + 1

        @user_errors_stream
        def on_send(text, cid, stage_id, request: gr.Request):
            name = username(request)
            if not isinstance(text, str) or not text.strip():
                gr.Warning("消息为空，已忽略")
                yield gr.update(), gr.update(), cid, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
                return
            info = gr.update()
            if cid is None:
                conversation = service.new_conversation(name, stage_id)
                cid = conversation["id"]
                info = conversation_info(conversation)
            history = service.history(name, cid)
            shown, ids = to_chatbot(history)
            shown = shown + [{"role": "user", "content": show(text.strip())}, {"role": "assistant", "content": "…"}]
            yield shown, "", cid, gr.update(), gr.update(), "", gr.update(visible=False), info
            notes = []
            for event in throttled(service.send(name, cid, text, stage_id)):
                shown[-1] = {"role": "assistant", "content": show(event.text) or "…"}
                if event.done:
                    notes = event.notices
                yield shown, "", cid, gr.update(), gr.update(), "", gr.update(), gr.update()
            messages, ids, choices = refresh_view(name, cid)
            yield messages, "", cid, ids, choices, "　".join(f"提示：{n}" for n in notes), gr.update(), gr.update()

        @user_errors_stream
        def on_regen(cid, request: gr.Request):
            name = username(request)
            if cid is None:
                raise gr.Error("还没有对话")
            history = service.history(name, cid)
            shown, _ = to_chatbot(history)
            if shown and shown[-1]["role"] == "assistant":
                shown = shown[:-1]
            shown.append({"role": "assistant", "content": "…"})
            notes = []
            for event in throttled(service.regenerate(name, cid)):
                shown[-1] = {"role": "assistant", "content": show(event.text) or "…"}
                notes = event.notices if event.done else notes
                yield shown, gr.update(), gr.update(), gr.update()
            messages, ids, choices = refresh_view(name, cid)
            yield messages, ids, choices, "提示：已重新生成，之前的回复作为备选保留。" + "".join(f"　提示：{n}" for n in notes)

        def screening_view(name, cid):
            import pandas as pd

            columns = ["题号", "问题", "回答", "得分", "评分方式", "需复核", "临床更正"]
            state = service.screening_state(name, cid) if cid is not None else None
            if not state or not state["assessment_id"]:
                return "尚未进行量表筛查。", pd.DataFrame([], columns=columns)
            inst = service.instruments[state["instrument"]]
            status = f"进行中（第 {state['current_item']} 题）" if state["active"] else "已完成"
            summary = (f"**{inst.name}** · {status} · 当前总分 **{state['total']}** / {inst.max_total}"
                       f" · {state['band']} · 需复核 {state['needs_review']} 题")
            rows = [[i["item_no"], i["question"], i["answer"], i["score"], i["method"],
                     "是" if i["needs_review"] else "", i["clinician_score"]] for i in state["items"]]
            return summary, pd.DataFrame(rows, columns=columns)

        @user_errors
        def on_screening_refresh(cid, request: gr.Request):
            return screening_view(username(request), cid)

        @user_errors
        def on_start_screening(cid, inst, request: gr.Request):
            name = username(request)
            if cid is None:
                raise gr.Error("请先开始对话，并和来访者简单交流后再开始筛查")
            service.start_screening(name, cid, inst)
            messages, ids, choices = refresh_view(name, cid)
            summary, table = screening_view(name, cid)
            stage_id = service.store.get_conversation(cid)["stage_id"]
            return messages, ids, choices, summary, table, stage_id

        @user_errors
        def on_fix(cid, item_no, score, request: gr.Request):
            name = username(request)
            state = service.screening_state(name, cid) if cid is not None else None
            if not state or not state["assessment_id"]:
                raise gr.Error("这个对话还没有量表筛查")
            if item_no is None or score is None:
                raise gr.Error("请填写题号并选择正确得分")
            service.correct_item(name, state["assessment_id"], int(item_no), int(score))
            gr.Info("更正已保存")
            return screening_view(name, cid)

        @user_errors
        def on_stop(cid, request: gr.Request):
            if cid is not None:
                service.stop(username(request), cid)

        @user_errors
        def on_compare(cid, opp, request: gr.Request):
            if cid is None:
                raise gr.Error("还没有对话")
            result = service.compare(username(request), cid, opp or None)
            return result, result["text_a"], result["text_b"], gr.update(visible=True)

        def make_choose(choice):
            @user_errors
            def on_choose(state, cid, request: gr.Request):
                if not state:
                    raise gr.Error("请先点击“比较两条回复”")
                name = username(request)
                service.choose(name, state["message_a"], state["message_b"], choice)
                messages, ids, choices = refresh_view(name, cid)
                return {}, gr.update(visible=False), messages, ids, choices, f"已记录：{CHOICE_LABELS[choice]}"

            return on_choose

        @user_errors
        def on_like(ids, evt: gr.LikeData, request: gr.Request):
            index = evt.index if isinstance(evt.index, int) else evt.index[0]
            if index is None or index >= len(ids) or ids[index] is None:
                raise gr.Error("找不到这条回复")
            value = 1 if evt.liked is True else (-1 if evt.liked is False else 0)
            service.thumb(username(request), ids[index], value)
            gr.Info({1: "已点赞", -1: "已点踩", 0: "已取消"}[value])

        @user_errors
        def on_target(message_id, request: gr.Request):
            empty = [None] * len(DIMENSIONS) + [[], "", "", ""]
            if not message_id:
                return empty
            rating = service.ratings_of(username(request), message_id)
            if not rating:
                return empty
            return [rating.get(d) for d in DIMENSIONS] + [
                rating.get("tags") or [], rating.get("comment") or "", rating.get("rewrite") or "",
                f"已载入你的第 {rating['revision']} 次评分，修改后再次提交即为新版本。",
            ]

        @user_errors
        def on_submit(message_id, overall, empathy, professionalism, safety_score, guidance,
                      tag_values, comment_text, rewrite_text, request: gr.Request):
            if not message_id:
                raise gr.Error("请先选择要评分的回复")
            values = (overall, empathy, professionalism, safety_score, guidance)
            fields = {k: int(v) for k, v in zip(DIMENSIONS, values) if v is not None}
            result = service.rate(
                username(request), message_id, **fields, tags=tag_values or [],
                comment=comment_text or None, rewrite=rewrite_text or None,
            )
            return f"已保存（第 {result['revision']} 版）"

        @user_errors
        def on_dashboard(request: gr.Request):
            data = service.dashboard(username(request))
            c = data["counts"]
            text = "　".join(f"**{label}**：{c.get(key, 0)}" for key, label in (
                ("conversations", "对话"), ("messages", "消息"), ("rated_replies", "已评分回复"),
                ("ratings", "评分"), ("comparisons", "比较"), ("open_flags", "待复核标记")))
            import pandas as pd

            def frame(rows, columns):
                return pd.DataFrame(rows, columns=columns)

            activity = frame(data["activity"], ["user", "role", "conversations", "rated_messages", "thumbs", "unrated_replies"])
            activity.columns = ["账号", "角色", "对话", "已评分回复", "点赞/踩", "未评分回复"]
            return (
                text,
                frame(data["per_day"], ["day", "ratings"]),
                frame(data["tags"], ["tag", "count"]),
                frame(data["dims"], ["dimension", "mean", "version"]),
                frame(data["wins"], ["pair", "win_rate"]),
                activity,
            )

        @user_errors
        def on_versions(request: gr.Request):
            import pandas as pd

            return pd.DataFrame(service.versions_table(username(request)), columns=[
                "ID", "标签", "基座模型", "适配器", "量化", "后端", "父版本", "指标", "登记时间", "正在服务"])

        @user_errors
        def on_export(include_demo, request: gr.Request):
            result = service.export_training_data(username(request), include_demo=bool(include_demo))
            return f"已导出到 {result['path']}\n\n{result['summary']}"

        @user_errors
        def on_flags(request: gr.Request):
            return flags_frame(service.flags_table(username(request)))

        @user_errors
        def on_review(fid, note, request: gr.Request):
            if fid is None:
                raise gr.Error("请输入标记 ID")
            service.review_flag(username(request), int(fid), note or None)
            gr.Info("已标记为已复核")
            return flags_frame(service.flags_table(username(request)))

        # -- wiring --------------------------------------------------------------------------------
        private = {"api_visibility": "undocumented"}
        demo.load(on_load, None, [who, dash_tab, review_tab, versions_tab, opponent], **private)
        refresh_versions.click(on_versions, None, [versions_table], **private)
        export_btn.click(on_export, [export_demo], [export_out], **private)
        stage.change(on_stage, [stage, conv_id], [stage_desc, stage_prompt], **private)
        new_btn.click(on_new, [stage, case], [conv_id, chatbot, msg_ids, target, conv_info, msg, case_pos, compare_box, notice], **private)
        fill.click(on_fill, [case, case_pos], [msg, case_pos], **private)
        send_outputs = [chatbot, msg, conv_id, msg_ids, target, notice, compare_box, conv_info]
        send_event = send.click(on_send, [msg, conv_id, stage], send_outputs, concurrency_id="model", concurrency_limit=model_slots, **private)
        submit_event = msg.submit(on_send, [msg, conv_id, stage], send_outputs, concurrency_id="model", concurrency_limit=model_slots, **private)
        for event in (send_event, submit_event):
            event.then(on_screening_refresh, [conv_id], [scr_summary, scr_table], **private)
        start_scr.click(on_start_screening, [conv_id, instrument], [chatbot, msg_ids, target, scr_summary, scr_table, stage], **private)
        fix_btn.click(on_fix, [conv_id, fix_item, fix_score], [scr_summary, scr_table], **private)
        regen_event = regen.click(on_regen, [conv_id], [chatbot, msg_ids, target, notice], concurrency_id="model", concurrency_limit=model_slots, **private)
        stop.click(on_stop, [conv_id], None, concurrency_limit=None, **private)
        compare.click(on_compare, [conv_id, opponent], [cmp_state, text_a, text_b, compare_box], concurrency_id="model", concurrency_limit=model_slots, **private)
        for c, btn in choice_btns.items():
            btn.click(make_choose(c), [cmp_state, conv_id], [cmp_state, compare_box, chatbot, msg_ids, target, notice], **private)
        chatbot.like(on_like, [msg_ids], None, **private)
        rating_inputs = [scores[d] for d in DIMENSIONS] + [tag_box, comment, rewrite]
        target.change(on_target, [target], rating_inputs + [rate_status], **private)
        submit.click(on_submit, [target] + rating_inputs, [rate_status], **private)
        refresh.click(on_dashboard, None, [counts, per_day, tags_plot, dims_plot, win_plot, activity], **private)
        refresh_flags.click(on_flags, None, [flags_table], **private)
        review_btn.click(on_review, [flag_id, flag_note], [flags_table], **private)
        del send_event, submit_event, regen_event

        register_api(service, model_slots)
    return demo


def register_api(service: Service, model_slots: int = 1) -> None:
    """Named endpoints for gradio_client (must be called inside the Blocks context)."""

    def api(fn):
        return gr.api(user_errors(fn), api_name=fn.__name__)

    def api_stream(fn):
        return gr.api(user_errors_stream(fn), api_name=fn.__name__, concurrency_id="model",
                      concurrency_limit=model_slots)

    @api
    def stages(request: gr.Request) -> list:
        """The treatment stages: id, name, description, instruction."""
        service.user(username(request))
        return [vars(s) for s in service.stages]

    @api
    def new_conversation(stage_id: str = "", case_id: str = "", request: gr.Request = None) -> dict:
        """Start a conversation in a stage (empty: the first stage), optionally from a sample case."""
        return service.new_conversation(username(request), stage_id or None, case_id or None)

    @api_stream
    def chat(conversation_id: int, message: str, stage_id: str = "", request: gr.Request = None) -> dict:
        """Send a client message; streams {"text", "done", "message_id", "user_message_id", "notices", ...}."""
        name = username(request)
        for event in throttled(service.send(name, conversation_id, message, stage_id or None)):
            yield event_dict(event)

    @api_stream
    def regenerate(conversation_id: int, request: gr.Request = None) -> dict:
        """A new reply to the newest client message (the earlier one is kept as an alternative)."""
        for event in throttled(service.regenerate(username(request), conversation_id)):
            yield event_dict(event)

    @api
    def stop(conversation_id: int, request: gr.Request = None) -> bool:
        """Stop the reply being generated in this conversation (it is kept as interrupted)."""
        return service.stop(username(request), conversation_id)

    @api
    def history(conversation_id: int, request: gr.Request = None) -> list:
        """The active path of the conversation, with message ids."""
        return [public_message(m) for m in service.history(username(request), conversation_id)]

    @api
    def rate(
        message_id: int,
        overall: Any = None,
        empathy: Any = None,
        professionalism: Any = None,
        safety: Any = None,
        guidance: Any = None,
        tags: list | None = None,
        comment: str | None = None,
        rewrite: str | None = None,
        request: gr.Request = None,
    ) -> dict:
        """A detailed rating of any reply: scores 1-5 (or null), tags, comment, expert rewrite."""
        scores = {"overall": overall, "empathy": empathy, "professionalism": professionalism,
                  "safety": safety, "guidance": guidance}
        fields = {k: v for k, v in scores.items() if v is not None}
        return service.rate(username(request), message_id, **fields, tags=tags or [], comment=comment or None, rewrite=rewrite or None)

    @api
    def thumb(message_id: int, value: int, request: gr.Request = None) -> dict:
        """Thumbs up (1), down (-1) or cleared (0) on a reply."""
        return service.thumb(username(request), message_id, value)

    @api
    def compare(conversation_id: int, opponent_version_id: int = 0, request: gr.Request = None) -> dict:
        """Two blind replies to the newest client message: {message_a, message_b, text_a, text_b}."""
        return service.compare(username(request), conversation_id, opponent_version_id or None)

    @api
    def choose(message_a: int, message_b: int, choice: str, request: gr.Request = None) -> dict:
        """Which of the two compared replies is better: a, b, tie or both_bad."""
        return service.choose(username(request), message_a, message_b, choice)

    @api
    def flags(include_reviewed: bool = False, request: gr.Request = None) -> list:
        """Admin: flagged conversations (crisis messages, blocked replies)."""
        return service.flags(username(request), include_reviewed=bool(include_reviewed))

    @api
    def review_flag(flag_id: int, note: str = "", request: gr.Request = None) -> bool:
        """Admin: mark a flag reviewed."""
        service.review_flag(username(request), flag_id, note or None)
        return True

    @api
    def start_screening(conversation_id: int, instrument: str = "phq9", request: gr.Request = None) -> dict:
        """Start PHQ-9 (phq9) or GAD-7 (gad7): the reply is the introduction and the first item;
        each later /chat message is an answer, scored and followed by the next item."""
        return service.start_screening(username(request), conversation_id, instrument)

    @api
    def screening(conversation_id: int, request: gr.Request = None) -> dict:
        """The latest screening of a conversation: items with answers, scores, method, review marks, total, band."""
        return service.screening_state(username(request), conversation_id)

    @api
    def correct_item(assessment_id: int, item_no: int, score: int, request: gr.Request = None) -> dict:
        """A clinician's corrected score (0-3) for one screening item."""
        return service.correct_item(username(request), assessment_id, item_no, score)

    @api
    def delete_conversation(conversation_id: int, request: gr.Request = None) -> dict:
        """Delete a conversation with its messages, ratings and comparisons (owner or admin)."""
        return service.delete_conversation(username(request), conversation_id)


def flags_frame(rows: list[list]):
    import pandas as pd

    return pd.DataFrame(rows, columns=["标记 ID", "对话", "临床人员", "类别", "证据", "来源", "时间"])


def public_message(m: dict) -> dict:
    keys = ("id", "role", "content", "stage_id", "model_version_id", "parent_id", "status", "metrics", "safety", "created_at")
    return {k: m.get(k) for k in keys}


def event_dict(event) -> dict:
    out = {"text": event.text, "done": event.done, "notices": event.notices}
    if event.message is not None:
        out.update(message_id=event.message["id"], user_message_id=event.message["parent_id"],
                   status=event.message["status"], metrics=event.message.get("metrics"),
                   safety=event.message.get("safety"))
    return out


HELP = """
### 如何使用
1. 左侧选择**治疗阶段**（可在对话中途切换，从下一轮起生效），可选一个**示例个案**用于快速演示，点击“开始新对话”。
2. 以**来访者**的身份输入消息；模型以咨询师身份回复。“停止”可中断生成，“重新生成”会保留之前的回复作为备选。
3. 每条回复下方可**点赞/点踩**；右侧可对**任意一条**回复做详细评分（总体、共情、专业性、安全性、引导性）、选择标签、写评语和“更好的回复”。再次提交即为新版本，以最新为准。
4. “比较两条回复”会对同一上下文生成两条回复，随机排列、隐藏来源；选择更好的一条，它将继续对话。
5. 检测到危机内容时，回复开头会先给出求助资源，并自动标记该对话供管理员复核。

所有评分保存在 `feedback.db`，由 `train/` 转换为下一轮模型的训练数据。
"""
