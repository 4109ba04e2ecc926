"""The rating-task UI: the "待评分任务" tab (clinicians), the "评分批次" tab (admins), the agreement
section of the dashboard, and their named API endpoints. Called from layout.py inside the Blocks:

    agreement = tasks.dashboard_section()              # inside the dashboard tab
    tasks.build_tabs(demo, service, agreement, (refresh.click, dash_tab.select), model_slots)
    api_names |= tasks.register_task_api(service, model_slots)

The rating controls are the same as the chat tab's (one 1-5 choice per dimension of
config/rating.yaml, the tags, comment and rewrite) plus a thumb, and the same validation applies
(the store's ``add_rating`` / ``set_thumb``).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from mvp.app.service import Service

from .common import user_errors, username
from .task_handlers import SOURCE_CHOICES, SOURCE_CONVERSATIONS, THUMB_CHOICES, TaskHandlers

SCORE_CHOICES = [1, 2, 3, 4, 5]
PRIVATE = {"api_visibility": "undocumented"}


def dashboard_section() -> list:
    """The agreement part of the dashboard: help text, alpha per measure, per rater, per batch, progress."""
    gr.Markdown("### 评分一致性与评分任务进度")
    return [gr.Markdown(elem_id="agreement-help"),
            gr.Dataframe(label="一致性（全部评分）", elem_id="agreement", wrap=True, interactive=False),
            gr.Dataframe(label="各评分者与其他人的一致性", elem_id="agreement-raters", wrap=True, interactive=False),
            gr.Dataframe(label="各评分批次的一致性（只算该批次已完成的任务）", elem_id="agreement-batches", wrap=True,
                         interactive=False),
            gr.Dataframe(label="评分任务进度（每个批次、每位评分人）", elem_id="batch-progress-dash", wrap=True,
                         interactive=False)]


def build_tabs(demo: gr.Blocks, service: Service, dashboard: list, dashboard_triggers, model_slots: int = 1) -> None:
    """Both tabs and their wiring (call inside ``gr.Tabs``); a batch from a model version generates
    its replies in the model's queue (``model_slots`` as for chat)."""
    h = TaskHandlers(service)
    with gr.Tab("待评分任务", id="tasks") as tasks_tab:
        progress = gr.Markdown(elem_id="task-progress")
        task_id = gr.State(None)
        with gr.Row():
            refresh = gr.Button("刷新任务", size="sm", elem_id="task-refresh", scale=0, min_width=100)
        status = gr.Markdown(elem_id="task-status")
        with gr.Column(visible=False, elem_id="task-box") as box:
            with gr.Row():
                with gr.Column(scale=3):
                    context = gr.Markdown(elem_id="task-context", max_height=420)
                    reply = gr.Textbox(label="待评分的回复", interactive=False, lines=5, max_lines=20, elem_id="task-reply")
                with gr.Column(scale=2, min_width=280):
                    thumb = gr.Radio(THUMB_CHOICES, value=0, label="赞 / 踩", elem_id="task-thumb")
                    scores = [gr.Radio(SCORE_CHOICES, label=f"{d.name}（1-5）", info=d.hint or None,
                                       elem_id=f"task-score-{d.id}") for d in service.rating.dimensions.values()]
                    tags = gr.CheckboxGroup(list(service.rating.tags), label="标签", elem_id="task-tags")
                    comment = gr.Textbox(label="评语", lines=2, elem_id="task-comment")
                    rewrite = gr.Textbox(label="更好的回复（专家改写）", lines=3, elem_id="task-rewrite")
                    with gr.Row():
                        submit = gr.Button("提交并打开下一条", variant="primary", elem_id="task-submit")
                        skip = gr.Button("跳过这一条", elem_id="task-skip")

    with gr.Tab("评分批次", id="batches", visible=False) as batches_tab:
        gr.Markdown("把同一批回复分给多位临床人员（每条 k 位，尽量不分给对话的创建者，负担均衡），"
                    "评分时不显示模型版本和其他人的评分；完成后可在“数据看板”查看一致性。")
        with gr.Row():
            batch_name = gr.Textbox(label="批次名称", elem_id="batch-name", scale=2)
            kind = gr.Radio(SOURCE_CHOICES, value=SOURCE_CONVERSATIONS, label="回复来源", elem_id="batch-kind", scale=3)
        conversations = gr.Dropdown([], multiselect=True, label="对话", elem_id="batch-convs")
        with gr.Row(visible=False) as version_row:
            version = gr.Dropdown([], label="模型版本", elem_id="batch-version")
            n_cases = gr.Number(value=3, precision=0, minimum=1, maximum=40, label="示例个案数", elem_id="batch-cases")
            turns = gr.Number(value=2, precision=0, minimum=1, maximum=10, label="每个个案的来访者轮数", elem_id="batch-turns")
        with gr.Row():
            raters = gr.CheckboxGroup([], label="评分人", elem_id="batch-raters", scale=3)
            k = gr.Number(value=2, precision=0, minimum=1, maximum=20, label="每条回复的评分人数 k", elem_id="batch-k", scale=1)
        gold = gr.Textbox(label='标准答案（可选，JSON：{"回复ID": {"thumb": 1 或 -1, "min_overall": 4, "max_overall": 2}}）',
                          info="回复 ID 可通过 API 的 /history 查到（每条消息带 id）", lines=2, elem_id="batch-gold")
        with gr.Row():
            create = gr.Button("创建批次并分配", variant="primary", elem_id="batch-create")
            reload = gr.Button("刷新", size="sm", elem_id="batch-refresh")
        batch_status = gr.Markdown(elem_id="batch-status")
        batches = gr.Dataframe(label="评分批次", elem_id="batches-table", wrap=True, interactive=False)
        per_rater = gr.Dataframe(label="每个批次、每位评分人的进度", elem_id="batch-progress", wrap=True, interactive=False)

    demo.load(h.on_load, None, [tasks_tab, batches_tab], **PRIVATE)
    kind.change(lambda k: (gr.update(visible=k == SOURCE_CONVERSATIONS), gr.update(visible=k == SOURCE_CONVERSATIONS),
                           gr.update(visible=k != SOURCE_CONVERSATIONS)),
                [kind], [conversations, gold, version_row], queue=False, **PRIVATE)
    view = [progress, task_id, context, reply, box, *scores, thumb, tags, comment, rewrite, status]
    for trigger in (tasks_tab.select, refresh.click):
        trigger(h.on_open, None, view, **PRIVATE)
    submit.click(h.on_submit, [task_id, thumb, *scores, tags, comment, rewrite], view, **PRIVATE)
    skip.click(h.on_skip, [task_id], view, **PRIVATE)
    for trigger in (batches_tab.select, reload.click):
        trigger(h.on_batches, None, [conversations, raters, version, batches, per_rater], **PRIVATE)
    create.click(h.on_create, [kind, batch_name, conversations, version, n_cases, turns, raters, k, gold],
                 [batch_status, batches, per_rater], concurrency_id="model",
                 concurrency_limit=model_slots, **PRIVATE)
    for trigger in dashboard_triggers:
        trigger(h.on_dashboard, None, dashboard, **PRIVATE)


def register_task_api(service: Service, model_slots: int = 1) -> set[str]:
    """Named endpoints: /my_tasks, /next_task, /submit_task, /skip_task, /create_batch,
    /create_version_batch, /batches, /batch_progress, /agreement. Returns their names."""
    names: set[str] = set()

    def api(fn, **kwargs):
        names.add(fn.__name__)
        return gr.api(user_errors(fn), api_name=fn.__name__, **kwargs)

    def model_api(fn):  # generates replies: shares the model's queue with chat
        return api(fn, concurrency_id="model", concurrency_limit=model_slots)

    @api
    def my_tasks(request: gr.Request = None) -> list:
        """Your rating batches with progress: batch_id, name, total, done, skipped, open."""
        return service.my_tasks(username(request))

    @api
    def next_task(batch_id: int = 0, request: gr.Request = None) -> dict | None:
        """Your next open task, blind: task_id, reply, context, position, total, done (null: none left)."""
        return service.next_task(username(request), batch_id or None)

    @api
    def submit_task(task_id: int, scores: dict | None = None, thumb: int = 0, tags: list | None = None,
                    comment: str = "", rewrite: str = "", request: gr.Request = None) -> dict:
        """Judge an assigned reply: scores {dimension: 1-5}, thumb 1 / -1 / 0, tags, comment, rewrite."""
        return service.submit_task(username(request), task_id, scores, thumb or None, tags, comment or None,
                                   rewrite or None)

    @api
    def skip_task(task_id: int, request: gr.Request = None) -> dict:
        """Close an assigned task without a judgement."""
        return service.skip_task(username(request), task_id)

    @api
    def create_batch(name: str, conversation_ids: list, k: int, assignees: list, gold: dict | None = None,
                     request: gr.Request = None) -> dict:
        """Admin: every reply of the conversations, each to k of the assignees; gold {reply id: {...}}."""
        return service.create_batch_from_conversations(username(request), name, conversation_ids, k, assignees, gold)

    @model_api
    def create_version_batch(name: str, version_id: int, k: int, assignees: list, n_cases: int = 3,
                             turns_per_case: int = 2, request: gr.Request = None) -> dict:
        """Admin: a model version answers the client turns of sample cases; each reply to k assignees."""
        return service.create_batch_from_version(username(request), name, version_id or None, k, assignees,
                                                 n_cases=n_cases, turns_per_case=turns_per_case)

    @api
    def batches(request: gr.Request = None) -> list:
        """Admin: every rating batch with items, tasks, done, skipped, open."""
        return service.batches(username(request))

    @api
    def batch_progress(batch_id: int = 0, request: gr.Request = None) -> list:
        """Admin: progress per batch and assignee."""
        return service.batch_progress(username(request), batch_id or None)

    @api
    def agreement(batch_id: int = 0, request: gr.Request = None) -> dict[str, Any]:
        """Admin: Krippendorff's alpha per dimension, thumbs and pairwise choices, per rater, gold."""
        return service.agreement(username(request), batch_id or None)

    return names
