"""Handlers and views of the rating-task tabs ("待评分任务", "评分批次") and the dashboard's agreement
section. Same style as handlers.py: take the components' values and the request, make one service
call, return what to show. Scores arrive one value per dimension of config/rating.yaml, in order.
"""

from __future__ import annotations

import json

import gradio as gr

from mvp.app.service import Service, ServiceError

from . import render
from .common import info, user_errors, username

SKIP = gr.update()
THUMB_CHOICES = [("赞", 1), ("踩", -1), ("不选", 0)]
SOURCE_CONVERSATIONS, SOURCE_VERSION = "conversations", "version"
SOURCE_CHOICES = [("所选对话中的模型回复", SOURCE_CONVERSATIONS), ("某个模型版本回答示例个案（现场生成）", SOURCE_VERSION)]
MEASURE_COLUMNS = ["指标", "尺度", "α", "解读", "项数", "评分数", "评分者", "说明"]
PROGRESS_COLUMNS = ["批次", "名称", "评分人", "已完成", "跳过", "未完成", "进度"]
BATCH_COLUMNS = ["批次", "名称", "来源", "k", "回复数", "任务数", "已完成", "跳过", "未完成", "标准答案", "创建时间"]
LEVEL_LABELS = {"interval": "等距", "nominal": "名义"}
AGREEMENT_HELP = ("**评分一致性**（Krippendorff's α，同一条回复被多位临床人员评分时才能计算）："
                  "α ≥ 0.8 可信，0.667-0.8 初步可信，更低则不宜据此训练；项数越少越不稳。"
                  "“各评分者”一栏是该评分者与其他人共识（中位数或多数）相比的 α。")


def _alpha_text(entry: dict | None) -> str:
    if not entry:
        return ""
    if entry["alpha"] is None:
        return f"—（n={entry['n_items']}）"
    return f"{entry['alpha']:.3f}（n={entry['n_items']}）"


def measures_frame(report: dict):
    rows = [[m["name"], LEVEL_LABELS.get(m["level"], m["level"]), "" if m["alpha"] is None else round(m["alpha"], 3),
             m["verdict"], m["n_items"], m["n_values"], m["n_raters"], (m["note"] or "").split(" / ")[0]]
            for m in report["measures"]]
    return render.frame(rows, MEASURE_COLUMNS)


def raters_frame(report: dict):
    names = {m["id"]: m["name"] for m in report["measures"]}
    gold = {g["rater"]: g for g in report["gold"]}
    columns = ["评分者"] + [f"α {n}" for n in names.values()] + ["标准答案一致"]
    rows = []
    for r in report["raters"]:
        g = gold.get(r["rater"])
        rows.append([r["rater"]] + [_alpha_text(r["measures"].get(key)) for key in names]
                    + [f"{g['agree']}/{g['checks']}" if g and g["checks"] else ""])
    return render.frame(rows, columns)


MAX_BATCHES_SHOWN = 10  # per-batch alpha on the dashboard: the newest batches


def batch_agreement_frame(reports: list[tuple[dict, dict]]):
    """One row per batch: alpha (n) of each measure over that batch's finished tasks."""
    names = [(m["id"], m["name"]) for m in reports[0][1]["measures"] if m["id"] != "comparisons"] if reports else []
    rows = [[b["id"], b["name"]] + [_alpha_text(next(m for m in r["measures"] if m["id"] == key)) for key, _ in names]
            for b, r in reports]
    return render.frame(rows, ["批次", "名称"] + [f"α {n}" for _, n in names])


def progress_frame(rows: list[dict]):
    return render.frame([[r["batch_id"], r["name"], r["assignee"], r["done"], r["skipped"], r["open"],
                          f"已完成 {r['done']} / {r['total']}"] for r in rows], PROGRESS_COLUMNS)


def batches_frame(batches: list[dict]):
    kinds = {"conversations": "所选对话", "model_version": "模型版本 + 示例个案"}
    return render.frame([[b["id"], b["name"], kinds.get(b["source"].get("kind"), ""), b["k"], b["items"], b["tasks"],
                          b["done"], b["skipped"], b["open"], b["gold_items"], render.local_time(b["created_at"])]
                         for b in batches], BATCH_COLUMNS)


def task_progress_text(summary: list[dict]) -> str:
    if not summary:
        return "目前没有分配给你的评分任务。"
    return "　".join(f"**{html_safe(s['name'])}**：已完成 {s['done']} / {s['total']}"
                    + (f"（跳过 {s['skipped']}）" if s["skipped"] else "") for s in summary)


def context_markdown(messages: list[dict]) -> str:
    """The dialogue before the reply, as quoted turns (text escaped: it fetches and runs nothing)."""
    if not messages:
        return "**对话上下文**：（无）"
    speaker = {"user": "来访者", "assistant": "之前的回复"}
    turns = ["> **{}**：{}".format(speaker[m["role"]], render.show(m["content"]).replace("\n", "\n> "))
             for m in messages]
    return "**对话上下文**（这条回复之前的对话）\n\n" + "\n>\n".join(turns)


def html_safe(text: str) -> str:
    return render.show(text)


def parse_gold(text: str | None) -> dict | None:
    """The admin's gold items: JSON ``{reply id: {"thumb": 1 | -1, "min_overall": n, "max_overall": n}}``."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServiceError(f"标准答案不是有效的 JSON：{exc.msg}（第 {exc.lineno} 行）") from None
    if not isinstance(value, dict):
        raise ServiceError('标准答案必须是 JSON 对象，例如 {"12": {"thumb": -1}}')
    return value


class TaskHandlers:
    def __init__(self, service: Service):
        self.service = service
        self.dimensions = tuple(service.rating.dimensions)

    # -- clinicians --------------------------------------------------------------------------------
    @user_errors
    def on_load(self, request: gr.Request):
        """Tab visibility: tasks for raters, batches for admins."""
        user = self.service.user(username(request))
        return gr.update(visible=user["role"] != "demo"), gr.update(visible=user["role"] == "admin")

    def _task_view(self, name: str, status: str = ""):
        """progress, task state, context chat, reply, box visibility, cleared controls, status."""
        summary = self.service.my_tasks(name)
        task = self.service.next_task(name)
        cleared = [None] * len(self.dimensions) + [0, [], "", ""]
        if task is None:
            done = "全部评分任务已完成，谢谢！" if summary else "目前没有分配给你的评分任务。"
            return (task_progress_text(summary), None, "", "", gr.update(visible=False), *cleared,
                    (status + "　" if status else "") + done)
        context = context_markdown(task["context"])
        heading = (f"**{html_safe(task['batch_name'])}** · 第 {task['done'] + task['skipped'] + 1} / {task['total']} 条"
                   "（盲评：不显示模型版本、对话归属和其他人的评分）")
        return (task_progress_text(summary), task["task_id"], context, task["reply"], gr.update(visible=True),
                *cleared, (status + "　" if status else "") + heading)

    @user_errors
    def on_open(self, request: gr.Request):
        return self._task_view(username(request))

    @user_errors
    def on_submit(self, request: gr.Request, task_id, thumb, *values):
        """values: one score per dimension (config order), then tags, comment, rewrite."""
        name = username(request)
        if not task_id:
            info("目前没有要评分的任务：点击“刷新任务”查看是否有新的分配。")
            return self._task_view(name)
        n = len(self.dimensions)
        scores, (tags, comment, rewrite) = values[:n], values[n:]
        fields = {d: int(v) for d, v in zip(self.dimensions, scores) if v is not None}
        self.service.submit_task(name, task_id, scores=fields, thumb=int(thumb or 0) or None, tags=tags or [],
                                 comment=comment or None, rewrite=rewrite or None)
        return self._task_view(name, "已保存。")

    @user_errors
    def on_skip(self, task_id, request: gr.Request):
        name = username(request)
        if task_id:
            self.service.skip_task(name, task_id)
        return self._task_view(name, "已跳过。" if task_id else "")

    # -- admin -------------------------------------------------------------------------------------
    def _tables(self, name: str):
        return batches_frame(self.service.batches(name)), progress_frame(self.service.batch_progress(name))

    @user_errors
    def on_batches(self, request: gr.Request):
        """Choices for a new batch (conversations, raters, versions) and the batch tables."""
        name = username(request)
        service = self.service
        conversations = render.conversation_choices(service.conversations(name), service.stages, show_owner=True)
        versions = [(f"版本 {v['id']} · {v.get('label') or v['base_model']}", v["id"]) for v in service.versions(name)]
        return (gr.update(choices=conversations), gr.update(choices=service.raters(name)),
                gr.update(choices=versions, value=service.engines.primary_id), *self._tables(name))

    @user_errors
    def on_create(self, kind, batch_name, conversation_ids, version_id, n_cases, turns, raters, k, gold_text,
                  request: gr.Request, progress=gr.Progress()):
        name = username(request)
        if not (batch_name or "").strip():
            raise ServiceError("请填写批次名称")
        k = int(k or 0)
        if kind == SOURCE_VERSION:
            progress(0, desc="正在生成回复…")
            result = self.service.create_batch_from_version(
                name, batch_name, version_id, k, list(raters or []), n_cases=int(n_cases or 0),
                turns_per_case=int(turns or 0), progress=lambda d, t, title: progress(d / t, desc=f"已生成 {d} / {t} 条回复"))
        else:
            result = self.service.create_batch_from_conversations(name, batch_name, list(conversation_ids or []), k,
                                                                  list(raters or []), parse_gold(gold_text))
        text = (f"已创建批次 #{result['batch_id']}：{result['items']} 条回复，每条 {k} 位评分人，共 {result['tasks']} 项任务。")
        if result["owner_assigned"]:
            text += f"注意：其中 {result['owner_assigned']} 条回复只能分配给对话的创建者本人（其他评分人不够）。"
        return (text, *self._tables(name))

    # -- dashboard ---------------------------------------------------------------------------------
    @user_errors
    def on_dashboard(self, request: gr.Request):
        name = username(request)
        report = self.service.agreement(name)
        per_batch = [(b, self.service.agreement(name, b["id"])) for b in self.service.batches(name)[:MAX_BATCHES_SHOWN]]
        return (AGREEMENT_HELP, measures_frame(report), raters_frame(report), batch_agreement_frame(per_batch),
                progress_frame(self.service.batch_progress(name)))
