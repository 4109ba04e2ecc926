"""The clinician app's Gradio layout: builds the components and wires their events, nothing more.

What each event does is a method of `handlers.Handlers`; how things are shown is `render`; the
named API endpoints for gradio_client are `api.register_api`. The rating sliders come from
config/rating.yaml (one per dimension, in its order).
"""

from __future__ import annotations

import gradio as gr

from mvp.app.service import Service
from mvp.counsel.cases import load_cases

from . import page, render, tasks
from .api import check_arguments, register_api
from .handlers import SAME_MODEL, Handlers
from .memory import MemoryPanel

SCORE_CHOICES = [1, 2, 3, 4, 5]
SERVED_MODEL_SLOTS = 8  # concurrent replies sent to an OpenAI-compatible server (it batches them)


def model_slots_for(model_info: dict) -> int:
    """The in-process model generates one reply at a time (one queue slot, so two generations never
    share a GPU by accident); a served model batches concurrent requests, so let them through."""
    return 1 if model_info.get("backend", "inprocess") == "inprocess" else SERVED_MODEL_SLOTS


def build_ui(service: Service, model_info: dict) -> gr.Blocks:
    stages = service.stages
    cases = load_cases()
    tags = list(service.rating.tags)
    model_slots = model_slots_for(model_info)
    h = Handlers(service)
    mem = MemoryPanel(h)  # 会谈摘要 panel, cut marker, stage suggestion (memory.py)

    with gr.Blocks(title="心理咨询大模型 MVP · 临床评测") as demo:
        gr.Markdown(render.DISCLAIMER, elem_id="disclaimer")
        with gr.Row():
            gr.Markdown("## 心理咨询大模型 MVP · 临床评测")
            who = gr.Markdown(elem_id="who")
            gr.Button("退出登录", link="logout", size="sm", scale=0, min_width=90, elem_id="logout")
        gr.Markdown(render.model_banner(model_info), elem_id="model-info")
        conv_id = gr.State(None)
        msg_ids = gr.State([])
        cmp_state = gr.State({})
        case_pos = gr.State(0)

        with gr.Tabs() as tabs:
            with gr.Tab("对话与评分", id="chat"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=230):
                        stage = gr.Dropdown(stages.choices(), value=stages.default.id, label="治疗阶段", elem_id="stage")
                        stage_desc = gr.Markdown(stages.default.description)
                        with gr.Accordion("本阶段的系统提示（模型看到的指令）", open=False):
                            stage_prompt = gr.Textbox(stages.default.instruction, show_label=False, interactive=False, lines=8, elem_id="stage-prompt")
                        case = gr.Dropdown([("（不使用）", "")] + [(c.title, c.id) for c in cases], value="", label="示例个案（可选，用于快速演示）", elem_id="case")
                        new_btn = gr.Button("＋ 新对话", variant="primary", elem_id="new")
                        conv_info = gr.Markdown("尚未开始对话：直接输入消息也会自动开始。", elem_id="conv-info")
                        conv_list = gr.Dropdown([], value=None, label="我的对话（最近的在前）", elem_id="conv-list",
                                                info="选择一条以继续对话、查看和补评它的回复")
                        mem.build_panel()
                        with gr.Group():
                            gr.Markdown("**量表筛查**（评估阶段，由模型逐题提问）")
                            instrument = gr.Radio([(i.name, i.id) for i in service.instruments.values()],
                                                  value=next(iter(service.instruments)), show_label=False, elem_id="instrument")
                            with gr.Row():
                                start_scr = gr.Button("开始筛查", elem_id="start-screening", min_width=80)
                                abandon_scr = gr.Button("放弃筛查", elem_id="abandon-screening", min_width=80)
                    with gr.Column(scale=3):
                        mem.build_banner()
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
                        opponent = gr.Dropdown([SAME_MODEL], value=0, label="比较对象（盲评，不显示来源）", elem_id="opponent")
                        with gr.Group(visible=False, elem_id="compare-box") as compare_box:
                            gr.Markdown("**哪条回复更好？**（顺序随机，来源隐藏；选中的回复会继续对话）")
                            with gr.Row():
                                text_a = gr.Textbox(label="回复 A", interactive=False, lines=6, max_lines=30, elem_id="cmp-a")
                                text_b = gr.Textbox(label="回复 B", interactive=False, lines=6, max_lines=30, elem_id="cmp-b")
                            with gr.Row(elem_id="cmp-choices"):
                                choice_btns = {c: gr.Button(label, min_width=60, scale=1, elem_id=f"choose-{c}")
                                               for c, label in render.CHOICE_LABELS.items()}
                        with gr.Group(elem_id="screening-panel"):
                            scr_summary = gr.Markdown("尚未进行量表筛查。", elem_id="screening-summary")
                            scr_table = gr.Dataframe(
                                headers=render.SCREENING_COLUMNS,
                                interactive=False, wrap=True, elem_id="screening-items",
                                column_widths=["8%", "28%", "26%", "8%", "12%", "9%", "9%"],
                            )
                            with gr.Row():
                                fix_item = gr.Number(value=1, label="更正：题号", precision=0, minimum=1, maximum=9, elem_id="fix-item")
                                fix_score = gr.Radio([0, 1, 2, 3], label="正确得分（0-3）", elem_id="fix-score")
                                fix_btn = gr.Button("保存更正", elem_id="fix-btn")
                    with gr.Column(scale=2, min_width=280):
                        gr.Markdown("### 详细评分")
                        target = gr.Dropdown([], label="要评分的回复（可选任意一条）", elem_id="rate-target")
                        scores = [  # one per dimension of config/rating.yaml, in its order
                            gr.Radio(SCORE_CHOICES, label=f"{d.name}（1-5）", info=d.hint or None, elem_id=f"score-{d.id}")
                            for d in service.rating.dimensions.values()
                        ]
                        tag_box = gr.CheckboxGroup(tags, label="标签", elem_id="tags")
                        comment = gr.Textbox(label="评语", lines=2, elem_id="comment")
                        rewrite = gr.Textbox(label="更好的回复（专家改写）", lines=4, elem_id="rewrite")
                        submit = gr.Button("提交评分（可多次修改，以最新为准）", variant="primary", elem_id="submit-rating")
                        rate_status = gr.Markdown(elem_id="rate-status")

            with gr.Tab("数据看板", id="dashboard", visible=False) as dash_tab:
                refresh = gr.Button("刷新", elem_id="refresh-dashboard", size="sm")
                counts = gr.Markdown(elem_id="counts")
                with gr.Row():
                    per_day = gr.BarPlot(x="day", y="ratings", title="每日评分数", x_title="日期", y_title="评分数",
                                         elem_id="plot-per-day")
                    tags_plot = gr.BarPlot(x="tag", y="count", title="标签频次", x_title="标签", y_title="次数", elem_id="plot-tags")
                with gr.Row():
                    dims_plot = gr.BarPlot(x="dimension", y="mean", color="version", title="各模型版本各维度平均分",
                                           x_title="维度", y_title="平均分（1-5）", color_title="模型版本", elem_id="plot-dims")
                    win_plot = gr.BarPlot(x="pair", y="win_rate", title="版本对比胜率（前者胜出的比例）", x_title="版本对（比较次数）",
                                          y_title="胜率", tooltip=["pair", "win_rate", "n"], elem_id="plot-win")
                activity = gr.Dataframe(label="各临床人员：对话数、已评分回复、未评分回复", elem_id="activity")
                agreement = tasks.dashboard_section()
                ranking_text = gr.Markdown(elem_id="ranking-text")
                ranking_plot = gr.HTML(elem_id="ranking-plot")
                ranking_table = gr.Dataframe(label="模型版本排名（强度与 95% 区间、比较次数）", elem_id="ranking", interactive=False)

            with gr.Tab("安全审查", id="review", visible=False) as review_tab:
                gr.Markdown("触发危机识别或回复安全检查的消息，每条消息一行（最新的在前）。点击一行选择它，"
                            "可打开这段对话，或写下复核备注后标记为已复核。")
                with gr.Row():
                    flags_all = gr.Checkbox(label="也显示已复核的", value=False, elem_id="flags-all")
                    flag_cat = gr.Dropdown([("全部类别", "")] + [(render.category_name(c), c) for c in render.REVIEW_CATEGORIES],
                                           value="", label="类别", elem_id="flag-cat")
                    refresh_flags = gr.Button("刷新", elem_id="refresh-flags", size="sm")
                flags_table = gr.Dataframe(headers=render.FLAG_COLUMNS, elem_id="flags", wrap=True, interactive=False,
                                           column_widths=["11%", "8%", "6%", "12%", "30%", "18%", "7%", "8%"])
                queue_rows = gr.State([])
                picked = gr.State(None)
                picked_info = gr.Markdown("点击表格中的一行以选择它。", elem_id="flag-picked")
                with gr.Row():
                    flag_note = gr.Textbox(label="复核备注（可选）", scale=3, elem_id="flag-note")
                    review_btn = gr.Button("标记所选为已复核", variant="primary", scale=1, elem_id="review-btn")
                    open_flag = gr.Button("打开这段对话", scale=1, elem_id="open-flag")
                    focus_at = gr.Number(value=-1, visible="hidden", elem_id="focus-at")

            with gr.Tab("模型版本与导出", id="versions", visible=False) as versions_tab:
                gr.Markdown("已登记的模型版本（`train.pipeline` 训练后自动登记）。在“对话与评分”中选择“比较对象”即可对两个版本做盲评。")
                versions_table = gr.Dataframe(elem_id="versions", wrap=True)
                refresh_versions = gr.Button("刷新", elem_id="refresh-versions")
                gr.Markdown("**导出训练数据**：把评分转换为 DPO / KTO / SFT 数据（TRL、LLaMA-Factory、BianQue 格式），默认去除个人信息。"
                            "完整流程见 `python -m train.pipeline`。")
                export_demo = gr.Checkbox(label="包含演示对话", value=False, elem_id="export-demo")
                export_btn = gr.Button("导出", elem_id="export-btn")
                export_out = gr.Textbox(label="导出结果", lines=8, interactive=False, elem_id="export-out")

            with gr.Tab("审计日志", id="audit", visible=False) as audit_tab:
                gr.Markdown("管理操作记录：复核标记、导出数据、删除对话、账号变更（谁、何时、对哪条记录；不含内容）。")
                audit_table = gr.Dataframe(elem_id="audit", wrap=True)
                refresh_audit = gr.Button("刷新", elem_id="refresh-audit")

            tasks.build_tabs(demo, service, agreement, (refresh.click, dash_tab.select), model_slots)

            with gr.Tab("使用说明", id="help"):
                gr.Markdown(render.help_text(service.rating))

        # -- wiring --------------------------------------------------------------------------------
        private = {"api_visibility": "undocumented"}
        demo.load(h.on_load, None, [who, dash_tab, review_tab, versions_tab, audit_tab, opponent, conv_list], **private)
        refresh_audit.click(h.on_audit, None, [audit_table], **private)
        refresh_versions.click(h.on_versions, None, [versions_table], **private)
        export_btn.click(h.on_export, [export_demo], [export_out], **private)
        stage.change(h.on_stage, [stage, conv_id], [stage_desc, stage_prompt, conv_info], **private)
        new_outputs = [conv_id, chatbot, msg_ids, target, conv_info, msg, case_pos, compare_box, notice, conv_list, scr_summary, scr_table]
        new_event = new_btn.click(h.on_new, [stage, case], new_outputs, **private)
        clear_event = chatbot.clear(h.on_new, [stage, case], new_outputs, **private)  # the clear icon starts a new conversation
        open_outputs = [conv_id, chatbot, msg_ids, target, conv_info, stage, scr_summary, scr_table, compare_box, notice, conv_list]
        open_event = conv_list.input(h.on_open, [conv_list], open_outputs, **private)
        fill.click(h.on_fill, [case, case_pos], [msg, case_pos], **private)
        send_outputs = [chatbot, msg, conv_id, msg_ids, target, notice, compare_box, conv_info]
        for trigger in (send.click, msg.submit):  # a new message brings the chat back to its newest text
            trigger(None, None, None, js=page.FOLLOW_CHAT_JS, **private)
        send_event = send.click(h.on_send, [msg, conv_id, stage], send_outputs, concurrency_id="model", concurrency_limit=model_slots, **private)
        submit_event = msg.submit(h.on_send, [msg, conv_id, stage], send_outputs, concurrency_id="model", concurrency_limit=model_slots, **private)
        for event in (send_event, submit_event):
            event.then(h.on_screening_refresh, [conv_id], [scr_summary, scr_table], **private).then(
                h.on_conversations, [conv_id], [conv_list], **private)
        start_scr.click(h.on_start_screening, [conv_id, instrument], [chatbot, msg_ids, target, scr_summary, scr_table, stage], **private)
        abandon_scr.click(h.on_abandon_screening, [conv_id], [scr_summary, scr_table], **private)
        fix_btn.click(h.on_fix, [conv_id, fix_item, fix_score], [scr_summary, scr_table], **private)
        regen_event = regen.click(h.on_regen, [conv_id], [chatbot, msg_ids, target, notice], concurrency_id="model", concurrency_limit=model_slots, **private)
        stop.click(h.on_stop, [conv_id], None, concurrency_limit=None, **private)
        compare.click(h.on_compare, [conv_id, opponent], [cmp_state, text_a, text_b, compare_box], concurrency_id="model",
                      concurrency_limit=model_slots, **private).success(None, js=page.SHOW_COMPARE_JS, **private)
        for c, btn in choice_btns.items():
            btn.click(h.make_choose(c), [cmp_state, conv_id], [cmp_state, compare_box, chatbot, msg_ids, target, notice], **private)
        chatbot.like(h.on_like, [msg_ids], None, **private)
        rating_inputs = scores + [tag_box, comment, rewrite]
        target.change(h.on_target, [target], rating_inputs + [rate_status], **private)
        submit.click(h.on_submit, [target] + rating_inputs, [rate_status], **private).then(
            h.on_conversations, [conv_id], [conv_list], **private)  # its unrated count
        dash_outputs = [counts, per_day, tags_plot, dims_plot, win_plot, activity]
        refresh.click(h.on_dashboard, None, dash_outputs, **private)
        dash_tab.select(h.on_dashboard, None, dash_outputs, **private)  # loads on open
        for trigger in (refresh.click, dash_tab.select):  # the version ranking (train.ranking)
            trigger(h.on_ranking, None, [ranking_text, ranking_plot, ranking_table], **private)
        queue_inputs, queue_outputs = [flags_all, flag_cat], [flags_table, queue_rows, picked, picked_info]
        for trigger in (refresh_flags.click, review_tab.select, flags_all.input, flag_cat.input):
            trigger(h.on_flags, queue_inputs, queue_outputs, **private)
        flags_table.select(h.on_flag_select, [queue_rows], [picked, picked_info], **private)
        review_btn.click(h.on_review, [picked, flag_note] + queue_inputs, queue_outputs + [flag_note], **private)
        flag_open_event = open_flag.click(h.on_flag_open, [picked], [tabs] + open_outputs + [focus_at], **private)
        flag_open_event.success(None, [focus_at], None, js=page.FOCUS_MESSAGE_JS, **private)  # the chat opens AT the flagged message
        regen_event.then(h.on_conversations, [conv_id], [conv_list], **private)
        mem.wire(conv_id=conv_id, stage=stage, conv_info=conv_info, open_outputs=open_outputs, private=private,
                 after=[send_event, submit_event, regen_event, new_event, clear_event, open_event, flag_open_event])
        del send_event, submit_event, regen_event

        check_arguments(demo, register_api(service, model_slots) | tasks.register_task_api(service, model_slots))
    return demo
