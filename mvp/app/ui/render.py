"""How the UI shows things: message text for the chatbot, dropdown entries, the model banner, and
every table (flags, versions, dashboard, screening) built from the service's plain rows.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from zoneinfo import ZoneInfo

from mvp import safety

DISCLAIMER = (
    "**注意**：研究演示系统，不是医疗或心理咨询服务。回复由语言模型生成，可能不准确；"
    "如遇危机，请拨打 120 / 110 或心理援助热线 12356。"
)
# The compare box opens below the buttons: bring it (both replies and the four choices) into view.
ROLE_LABELS = {"admin": "管理员", "clinician": "临床评测", "demo": "演示账号（不能评分）"}
CHOICE_LABELS = {"a": "A 更好", "b": "B 更好", "tie": "差不多", "both_bad": "都不好"}
METHOD_LABELS = {"rules": "规则", "model": "模型", "model+rules": "模型+规则", "none": "未评分"}  # mvp.assessment.scoring.METHODS
SCREENING_COLUMNS = ["题号", "问题", "回答", "得分", "评分方式", "复核", "更正分"]
FLAG_COLUMNS = ["时间", "临床人员", "对话", "类别", "被标记的消息", "前一轮", "来源", "状态"]
SOURCE_LABELS = {"rules": "规则", "model": "模型检查", "assessment": "量表", "manual": "人工", "output_screen": "回复检查",
                 "classifier": "分类器"}
# Clinicians read times in their own zone (set MVP_TIMEZONE on a server elsewhere); the store keeps UTC.
TIMEZONE = ZoneInfo(os.environ.get("MVP_TIMEZONE", "Asia/Shanghai"))
VERSION_COLUMNS = ["ID", "标签", "发布状态", "发布检查", "正在服务", "父版本", "基座模型", "适配器", "量化", "后端", "指标", "登记时间"]
RELEASE_LABELS = {"servable": "可服务", "candidate": "候选", "refused": "未通过发布检查"}
RANKING_COLUMNS = ["名次", "版本", "发布状态", "强度（对数，0=平均）", "95% 区间", "对平均水平的预期胜率", "比较次数", "胜", "负", "平", "都不好"]
ACTIVITY_COLUMNS = {"user": "账号", "role": "角色", "conversations": "对话", "rated_messages": "已评分回复",
                    "thumbs": "点赞/踩", "unrated_replies": "未评分回复"}
COUNT_LABELS = (("conversations", "对话"), ("user_messages", "来访者消息"), ("replies", "模型回复"), ("rated_replies", "已评分回复"),
                ("ratings", "评分"), ("comparisons", "比较"), ("open_flags", "待复核标记"))

# Markdown that would make the viewer's browser fetch or open something: images and links. Their
# brackets are escaped so that client and model text is shown as typed and fetches nothing.
_MARKDOWN_ESCAPES = str.maketrans({"[": "\\[", "]": "\\]", "!": "\\!", "<": "&lt;", ">": "&gt;", "&": "&amp;"})


def show(text: str) -> str:
    """Message text for the chatbot: HTML is escaped so it never runs, and Markdown images and links
    are neutralised so that no remote address is fetched or made clickable."""
    text = (text or "").translate(_MARKDOWN_ESCAPES)
    # Bare URLs are auto-linked by the Markdown renderer: break the scheme so they stay plain text.
    return text.replace("://", ":\u200b//")


def frame(rows, columns):
    import pandas as pd  # imported on first use: pandas costs start-up time

    return pd.DataFrame(rows, columns=columns)


def local_time(iso: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC ISO timestamp in the clinicians' time zone."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone(TIMEZONE).strftime(fmt)
    except ValueError:
        return str(iso)


def stage_name(stages, stage_id) -> str:
    try:
        return stages.get(stage_id).name
    except Exception:  # noqa: BLE001 - a stage removed from the settings: show its id
        return str(stage_id or "")


def to_chatbot(history: list[dict], stages=None, alternatives: dict | None = None) -> tuple[list[dict], list[int | None]]:
    """Store history -> (Chatbot messages, the message id of each one). With ``stages``, each reply
    carries a small line with the stage that produced it (and how many versions its turn has)."""
    messages, ids = [], []
    for m in history:
        if m["role"] not in ("user", "assistant"):
            continue
        content = show(m["content"])
        if m["role"] == "assistant" and m.get("status") == "interrupted":
            content += "\n\n*（已停止生成）*"
        if m["role"] == "assistant" and stages is not None:
            n = len((alternatives or {}).get(m["id"], ())) or 1
            more = f" · 本轮共 {n} 条回复，其他回复可在右侧“要评分的回复”中查看和评分" if n > 1 else ""
            content += f"\n\n<sub>〔{html.escape(stage_name(stages, m.get('stage_id')))}阶段{more}〕</sub>"
        messages.append({"role": m["role"], "content": content})
        ids.append(m["id"])
    return messages, ids


def _snippet(text: str, n: int = 24) -> str:
    return " ".join((text or "").split())[:n]


def rate_choices(history: list[dict], stages=None, alternatives: dict | None = None,
                 rated: set | None = None) -> list[tuple[str, int]]:
    """Dropdown entries for every reply (newest first): each reply on the active path, then the other
    replies of its turn (regenerated or compared ones), each with its stage and whether it is rated."""
    turns = []
    n = 0
    rated = rated or set()
    for m in history:
        if m["role"] != "assistant":
            continue
        n += 1
        entries = [(f"第 {n} 条回复", m)]
        others = [a for a in (alternatives or {}).get(m["id"], ()) if a["id"] != m["id"]]
        entries += [(f"第 {n} 条·其他回复 {k}", a) for k, a in enumerate(others, 1)]
        turn = []
        for label, r in entries:
            stage = f"（{stage_name(stages, r.get('stage_id'))}）" if stages is not None else ""
            mark = " ✓已评分" if r["id"] in rated else ""
            turn.append((f"{label}{stage}{mark}：{_snippet(r['content'])}", r["id"]))
        turns.append(turn)
    # newest turn first; within a turn the reply on screen first, so the default target after
    # "重新生成" is the reply the clinician is looking at, not the one it replaced
    return [entry for turn in reversed(turns) for entry in turn]


def conversation_choices(conversations: list[dict], stages, show_owner: bool = False) -> list[tuple[str, int]]:
    """The conversation list as dropdown entries, newest first. The narrow left column shows about 25
    characters of the chosen entry, so what tells conversations apart comes first: the flag marker, id,
    time, unrated/replies; then the owner (for an admin), stage, version and title."""
    out = []
    for c in conversations:
        parts = [f"#{c['id']}", local_time(c.get("updated_at") or c.get("created_at"), "%m-%d %H:%M"),
                 f"未评分 {c.get('unrated_count', 0)}/{c.get('reply_count', 0)}"]
        if show_owner:
            parts.append(c["user_name"])
        parts += [stage_name(stages, c["stage_id"]), f"版本 {c.get('model_version_id')}"]
        if (c.get("session_no") or 1) > 1:
            parts.append(f"第 {c['session_no']} 次会谈")
        if c.get("title"):
            parts.append(c["title"])
        label = " · ".join(parts)
        out.append((f"⚠待复核 {label}" if c.get("open_flags") else label, c["id"]))
    return out


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


def conversation_info(stages, conversation: dict) -> str:
    info = f"对话 #{conversation['id']} · 当前阶段：{stage_name(stages, conversation['stage_id'])}"
    return info + (" · 演示对话（不计入训练数据）" if conversation["is_demo"] else "")


REVIEW_CATEGORIES = (*safety.CATEGORIES, "review", "unsafe_reply")  # what a flag can carry


def category_name(category: str) -> str:
    if category == "unsafe_reply":
        return "回复未通过安全检查"
    if category == "review":
        return "检测失败，需人工查看"
    return safety.CATEGORY_NAMES.get(category, category)


def category_names(categories) -> str:
    return "、".join(category_name(c) for c in categories)


def review_frame(rows: list[dict]):
    """The review queue (service.review_queue rows) as a table, one row per flagged message."""
    out = []
    for r in rows:
        who = "来访者" if r.get("message_role") == "user" else "模型"
        message = f"{who}：{_snippet(r['message'], 200)}" if r["message"] else "；".join(r["evidence"])[:200]
        out.append([local_time(r["created_at"]), r.get("user_name") or "", f"#{r['conversation_id']}",
                    category_names(r["categories"]), message, _snippet(r.get("previous"), 120),
                    "、".join(SOURCE_LABELS.get(s, s) for s in r["sources"]),
                    "已复核" + (f"：{'；'.join(r['notes'])}" if r["notes"] else "") if r["reviewed"] else "待复核"])
    return frame(out, FLAG_COLUMNS)


AUDIT_COLUMNS = ["时间", "操作人", "操作", "对象", "详情"]
AUDIT_LABELS = {"flag_reviewed": "复核标记", "export": "导出训练数据", "conversation_deleted": "删除对话",
                "account_added": "创建账号", "account_disabled": "停用账号", "account_enabled": "启用账号",
                "password_changed": "修改密码", "version_promoted_anyway": "人工放行模型版本"}


def audit_frame(entries: list[dict]):
    rows = [[local_time(e["at"]), e["actor"], AUDIT_LABELS.get(e["action"], e["action"]), e.get("target") or "",
             "" if e.get("detail") is None else str(e["detail"])] for e in entries]
    return frame(rows, AUDIT_COLUMNS)


def versions_frame(versions: list[dict]):
    """Registered model versions (newest first) with their lineage and first metrics."""
    rows = []
    for v in versions:
        metrics = v.get("metrics") or {}
        shown = {k: metrics[k] for k in list(metrics)[:4]} if isinstance(metrics, dict) else metrics
        rows.append([v["id"], v.get("label") or "", RELEASE_LABELS.get(v.get("status") or "servable", v.get("status")),
                     release_text(v.get("release")), "当前" if v.get("serving") else "", v.get("parent_id") or "",
                     v["base_model"], v.get("adapter") or "", v["quantization"], v["backend"], str(shown or ""),
                     v["created_at"]])
    return frame(rows, VERSION_COLUMNS)


def release_text(release: dict | None) -> str:
    """The release gate's record in one line: its decision and reasons, an override's reason."""
    if not release:
        return ""
    short = [r.split("（")[0] for r in release.get("reasons") or []]  # the figures stay in the record
    text = "通过" if release.get("decision") == "promote" else "未通过：" + "；".join(short)
    if release.get("override"):
        o = release["override"]
        text += f"（已人工放行：{o.get('reason')}，{o.get('by')}，{local_time(o['at']) if o.get('at') else ''}）"
    return text


def _p(strength: float) -> float:
    import math

    return 1 / (1 + math.exp(-strength))


def _forest(rows: list[dict]) -> str:
    """A small forest plot in HTML: each version's strength (dot) and 95 % interval (bar), one scale."""
    ranked = [r for r in rows if r["strength"] is not None]
    if not ranked:
        return ""
    lo = min(r["ci"][0] for r in ranked) - 0.1
    hi = max(r["ci"][1] for r in ranked) + 0.1
    pos = lambda x: 100 * (x - lo) / (hi - lo)  # noqa: E731
    zero = f"<div style='position:absolute;left:{pos(0):.1f}%;top:0;bottom:0;border-left:1px dashed #999'></div>" if lo < 0 < hi else ""
    lines = []
    for r in ranked:
        a, b, m = pos(r["ci"][0]), pos(r["ci"][1]), pos(r["strength"])
        lines.append(
            f"<div style='display:flex;align-items:center;margin:4px 0'><div style='width:180px;font-size:13px'>"
            f"{r['rank']}. {html.escape(str(r['label']))}</div><div style='position:relative;flex:1;height:18px'>{zero}"
            f"<div style='position:absolute;left:{a:.1f}%;width:{max(b - a, 0.5):.1f}%;top:8px;height:3px;background:#4a7bd0'></div>"
            f"<div style='position:absolute;left:calc({m:.1f}% - 5px);top:4px;width:10px;height:10px;border-radius:5px;background:#1d3f8a'></div>"
            f"</div><div style='width:170px;font-size:12px;padding-left:8px'>{r['strength']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
            f"，{r['comparisons']} 次</div></div>")
    legend = ("<div style='font-size:12px;color:#555;margin-top:2px'>圆点 = 强度估计，横线 = 95% 区间，虚线 = 各版本平均（0）；"
              "横线互相重叠的版本之间没有可靠的差别</div>")
    return "<div id='ranking-forest'>" + "".join(lines) + legend + "</div>"


def ranking_view(data: dict) -> tuple[str, str, object]:
    """The Bradley–Terry ranking (train.ranking.from_store): headline text, forest plot, table."""
    rows = data["ranking"]
    table = [[r["rank"] or "—", f"{r['label']}（版本 {r['version_id']}）", RELEASE_LABELS.get(r["status"] or "servable", r["status"]),
              "—" if r["strength"] is None else f"{r['strength']:+.2f}",
              "—" if r["ci"] is None else f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]",
              "—" if r["strength"] is None else f"{_p(r['strength']):.0%}（{_p(r['ci'][0]):.0%}–{_p(r['ci'][1]):.0%}）",
              r["comparisons"], r["wins"], r["losses"], r["ties"], r["both_bad"]] for r in rows]
    if not rows:
        text = "**版本排名**：尚无不同模型版本之间的盲评比较（在“对话与评分”中选择“比较对象”即可开始）"
    else:
        text = (f"**版本排名（Bradley–Terry，{data['comparisons']} 次盲评比较）**：强度是对数尺度，0 = 各版本平均；"
                "区间是 95% 自助法区间（按比较重抽样）。区间重叠的版本之间没有可靠的差别；“平”算双方各半胜，“都不好”不计入强度。")
        pairs = []
        for p in data["pairs"]:
            ci = p.get("win_rate_ci")
            rate = f"{p['win_rate_a']:.0%}（95% 区间 {ci[0]:.0%}–{ci[1]:.0%}）" if ci else "—"
            pairs.append(f"{p['pair']}：前者胜率 {rate}，共 {p['n']} 次（{p['wins_a']}:{p['wins_b']}，平 {p['ties']}，都不好 {p['both_bad']}）")
        text += "\n\n**两两胜率**：" + "；".join(pairs)
    return text, _forest(rows), frame(table, RANKING_COLUMNS)


def _y_lim(rows: list[dict], key: str, floor: float = 1.0) -> list[float]:
    top = max([float(r.get(key) or 0) for r in rows] + [floor])
    return [0, top * 1.15]


def dashboard_view(data: dict) -> tuple:
    """The dashboard's headline text, its four charts (as updates with a y range that starts at 0,
    so a single category still draws a bar) and the activity table."""
    import gradio as gr

    c = data["counts"]
    text = "　".join(f"**{label}**：{c.get(key, 0)}" for key, label in COUNT_LABELS)
    activity = frame(data["activity"], list(ACTIVITY_COLUMNS))[list(ACTIVITY_COLUMNS)]
    activity["role"] = activity["role"].map(lambda r: ROLE_LABELS.get(r, r))
    activity.columns = list(ACTIVITY_COLUMNS.values())
    wins = [{**w, "pair": f"{w['pair']}（{w['n']} 次比较，{w['wins_a']}:{w['wins_b']}，平/都不好 {w['ties']}）"}
            for w in data["wins"]]
    text += "\n\n**版本对比**：" + ("；".join(w["pair"] + f" 胜率 {w['win_rate']:.0%}" for w in wins) if wins else
                                     "尚无不同模型版本之间的盲评（在“对话与评分”中选择“比较对象”即可开始）")
    return (
        text,
        gr.update(value=frame(data["per_day"], ["day", "ratings"]), y_lim=_y_lim(data["per_day"], "ratings")),
        gr.update(value=frame(data["tags"], ["tag", "count"]), y_lim=_y_lim(data["tags"], "count")),
        gr.update(value=frame(data["dims"], ["dimension", "mean", "version"]), y_lim=[0, 5]),
        gr.update(value=frame(wins, ["pair", "win_rate", "n"]), y_lim=[0, 1]),
        activity,
    )


def screening_view(state: dict | None, instruments: dict) -> tuple[str, object]:
    if not state or not state["assessment_id"]:
        return "尚未进行量表筛查。", frame([], SCREENING_COLUMNS)
    inst = instruments[state["instrument"]]
    status = f"进行中（第 {state['current_item']} 题）" if state["active"] else (
        "已放弃" if state.get("status") == "abandoned" else "已完成")
    if state["active"] and state.get("paused"):
        status += "，因危机流程暂停"
    summary = (f"**{inst.name}** · {status} · 当前总分 **{state['total']}** / {inst.max_total}"
               f" · {state['band']} · 需复核 {state['needs_review']} 题")
    rows = [[i["item_no"], i["question"], i["answer"], i["score"], METHOD_LABELS.get(i["method"], i["method"]),
             "是" if i["needs_review"] else "", i["clinician_score"]] for i in state["items"]]
    return summary, frame(rows, SCREENING_COLUMNS)


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


def help_text(rating) -> str:
    dims = "、".join(d.name for d in rating.dimensions.values())
    return HELP.format(dims=dims)


HELP = """
### 如何使用
1. 左侧选择**治疗阶段**（可在对话中途切换，从下一轮起生效），可选一个**示例个案**用于快速演示，点击“＋ 新对话”（对话框右上角的清空图标也会开始一段新对话）。
2. **我的对话**列出你的全部对话（最近的在前，可输入文字筛选）：阶段、模型版本、回复数、未评分数，⚠ 表示有待复核的安全标记。选择一条即可继续对话、查看和补评它的回复。
3. 以**来访者**的身份输入消息；模型以咨询师身份回复。每条回复下方注明生成它的阶段。“停止”可中断生成；“重新生成”后之前的回复仍保留，在右侧“要评分的回复”中标为“其他回复”，同样可以评分。
4. 每条回复下方可**点赞/点踩**；右侧可对**任意一条**回复做详细评分（{dims}）、选择标签、写评语和“更好的回复”。再次提交即为新版本，以最新为准；已评分的回复标有“✓已评分”。
5. “比较两条回复”会对同一上下文生成两条回复，随机排列、隐藏来源；选择更好的一条，它将继续对话。
6. **量表筛查**（PHQ-9 / GAD-7）的进度随时保存，服务重启后可继续；“放弃筛查”会保留已回答的题目。
7. 检测到危机内容时，回复开头会先给出求助资源，并自动标记该消息，管理员在“安全审查”中逐条复核。
8. 对话较长时，较早的轮次会移出模型上下文，由左侧的**会谈摘要**代替（对话中以“以上内容已移出模型视野”标出分界）；可直接修改摘要并“保存修改”，模型从下一轮起使用你的版本。满足本阶段的退出信号时，对话上方会**建议进入下一阶段**（接受 / 暂不）；“新会谈（同一来访者）”沿用上次的阶段和摘要。

所有评分保存在 `feedback.db`，由 `train/` 转换为下一轮模型的训练数据。
"""
