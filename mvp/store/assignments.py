"""Rating assignments: batches of replies, each assigned to k clinicians (overlap), blind and with
optional gold items. Tables ``rating_batches`` and ``rating_tasks`` (migration 10).

    batch = store.create_rating_batch("第一轮", "boss", 2, [r1, r2, r3], ["li", "wang", "zhao"],
                                      gold={r2: {"thumb": -1}})
    task = store.next_task("li")                 # the reply, its context, progress; no version, no owner
    store.complete_task(task["task_id"], "li", overall=4, empathy=5, thumb=1)
    store.task_summary("li")                     # per batch: total, done, skipped, open
    store.agreement_report(batch_id=batch["batch_id"])   # Krippendorff's alpha (see agreement.py)

A judgement of a task is stored as an ordinary rating / thumb row in the same transaction that
closes the task, so the export and the dashboard treat it like any other. Assignment spreads the
replies so that each gets k distinct raters, the reply's own conversation owner only when there are
not enough other raters (counted in ``owner_assigned``), and the load stays balanced (fewest
tasks first, then the order the raters were given in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from . import agreement
from .base import StoreBase
from .errors import NotFoundError, PermissionDeniedError, ValidationError
from .feedback import RATER_ROLES
from .schema import utc_now
from .validation import MAX_SCORE, MIN_SCORE, check_id, check_label, show, to_json

MAX_BATCH_ITEMS = 200   # replies in one batch
MAX_BATCH_RATERS = 50
MAX_K = 20
TASK_STATUSES = ("open", "done", "skipped")
GOLD_KEYS = ("thumb", "min_overall", "max_overall")
_DEMO = "(? OR c.is_demo = 0)"


def plan_assignments(items: Sequence[tuple[int, str]], raters: Sequence[str], k: int) -> tuple[list[tuple[int, str]], int]:
    """``[(message_id, owner)]`` -> ``([(message_id, rater)], owner_assigned)``: k distinct raters per
    reply, least-loaded first, the owner only when fewer than k others exist."""
    load = {r: 0 for r in raters}
    order = {r: i for i, r in enumerate(raters)}
    plan, owner_assigned = [], 0
    for message_id, owner in items:
        chosen = sorted((r for r in raters if r != owner), key=lambda r: (load[r], order[r]))[:k]
        if len(chosen) < k and owner in load:
            chosen.append(owner)
            owner_assigned += 1
        for rater in chosen:
            load[rater] += 1
            plan.append((message_id, rater))
    return plan, owner_assigned


def _int_list(values: Any, what: str, limit: int) -> list[int]:
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise ValidationError(f"{what}必须是列表，收到 {show(values)}")
    checked = [check_id(v, what) for v in values]
    if not checked:
        raise ValidationError(f"{what}不能为空")
    if len(checked) > limit:
        raise ValidationError(f"{what}过多：最多 {limit} 个，收到 {len(checked)} 个")
    return list(dict.fromkeys(checked))


def show_refused(value: Any) -> str:
    raise ValidationError(f"评分人必须是账号名（文本），收到 {show(value)}")


def check_gold(gold: Any) -> dict[str, int]:
    """An expected judgement: ``{"thumb": 1|-1}``, ``{"min_overall": 1-5}``, ``{"max_overall": 1-5}``."""
    if not isinstance(gold, dict) or not gold or set(gold) - set(GOLD_KEYS):
        raise ValidationError(f"标准答案必须是含 {'、'.join(GOLD_KEYS)} 之一的映射，收到 {show(gold)}")
    for key, value in gold.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"标准答案 {key} 必须是整数，收到 {show(value)}")
        if key == "thumb" and value not in (1, -1):
            raise ValidationError(f"标准答案 thumb 必须是 1（赞）或 -1（踩），收到 {show(value)}")
        if key != "thumb" and not MIN_SCORE <= value <= MAX_SCORE:
            raise ValidationError(f"标准答案 {key} 必须在 {MIN_SCORE}-{MAX_SCORE} 之间，收到 {show(value)}")
    return dict(gold)


def _given(text: Any) -> bool:
    """A comment or rewrite that counts as given (its type is checked by ``add_rating``)."""
    return text is not None and not (isinstance(text, str) and not text.strip())


class AssignmentsMixin(StoreBase):
    def create_rating_batch(
        self,
        name: str,
        created_by: str,
        k: int,
        message_ids: Iterable[int],
        assignees: Iterable[str],
        *,
        source: dict[str, Any] | None = None,
        blind: bool = True,
        gold: dict[Any, dict] | None = None,
    ) -> dict[str, Any]:
        """A batch of replies, each assigned to ``k`` of ``assignees`` (admins only). ``gold`` maps a
        message id to its expected judgement. Returns ``{"batch_id", "items", "tasks", "owner_assigned"}``;
        refuses the whole batch (nothing written) if any reply or account is unusable."""
        name = check_label(name, "批次名称")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValidationError(f"每条回复的评分人数 k 必须是 1-{MAX_K} 的整数，收到 {show(k)}")
        ids = _int_list(message_ids, "回复 ID", MAX_BATCH_ITEMS)
        if isinstance(assignees, (str, bytes)) or not isinstance(assignees, Iterable):
            raise ValidationError(f"评分人必须是账号列表，收到 {show(assignees)}")
        raters = [check_label(a, "评分人") if isinstance(a, str) else show_refused(a) for a in assignees]
        raters = list(dict.fromkeys(raters))
        if not raters or len(raters) > MAX_BATCH_RATERS:
            raise ValidationError(f"评分人必须是 1-{MAX_BATCH_RATERS} 个账号，收到 {len(raters)} 个")
        if k > len(raters):
            raise ValidationError(f"每条回复要 {k} 位评分人，但只选了 {len(raters)} 位：请多选评分人或减小 k")
        gold_by_id: dict[int, str] = {}
        if gold is not None and not isinstance(gold, dict):
            raise ValidationError(f"标准答案必须是 {{回复 ID: 期望的评价}} 的映射，收到 {show(gold)}")
        for key, value in (gold or {}).items():
            mid = int(key) if isinstance(key, str) and key.isascii() and key.isdecimal() else key
            if check_id(mid, "标准答案的回复 ID") not in ids:
                raise ValidationError(f"标准答案的回复 {mid} 不在这个批次里")
            gold_by_id[mid] = to_json(check_gold(value), "标准答案")
        source_json = to_json(source or {}, "批次来源")
        if not isinstance(blind, bool):
            raise ValidationError(f"blind 必须是 True 或 False，收到 {show(blind)}")
        with self._write() as conn:
            self._active_user(conn, created_by, "创建评分批次", roles=("admin",))
            for rater in raters:
                self._active_user(conn, rater, "接受评分任务", roles=RATER_ROLES)
            owners = []
            for mid in ids:
                row = self._row(conn, "SELECT m.role, c.user_name FROM messages m JOIN conversations c"
                                      " ON c.id = m.conversation_id WHERE m.id = ?", (mid,))
                if row is None:
                    raise NotFoundError(f"消息不存在：{mid}")
                if row["role"] != "assistant":
                    raise ValidationError(f"只能评价模型回复，消息 {mid} 是 {row['role']} 消息")
                owners.append((mid, row["user_name"]))
            plan, owner_assigned = plan_assignments(owners, raters, k)
            batch_id = conn.execute(
                "INSERT INTO rating_batches (name, created_by, created_at, k, source, blind)"
                " VALUES (?, ?, ?, ?, ?, ?)", (name, created_by, utc_now(), k, source_json, int(blind)),
            ).lastrowid
            position = {mid: i + 1 for i, mid in enumerate(ids)}
            conn.executemany(
                "INSERT INTO rating_tasks (batch_id, message_id, assignee, position, gold) VALUES (?, ?, ?, ?, ?)",
                [(batch_id, mid, rater, position[mid], gold_by_id.get(mid)) for mid, rater in plan],
            )
        return {"batch_id": int(batch_id), "items": len(ids), "tasks": len(plan), "owner_assigned": owner_assigned}

    # -- reads ---------------------------------------------------------------------------------
    def list_rating_batches(self) -> list[dict[str, Any]]:
        """Every batch, newest first, with ``items``, ``tasks``, ``done``, ``skipped``, ``open``, ``gold_items``."""
        with self._read() as conn:
            rows = self._rows(
                conn,
                "SELECT b.*, COUNT(DISTINCT t.message_id) AS items, COUNT(t.id) AS tasks,"
                " COALESCE(SUM(t.status = 'done'), 0) AS done, COALESCE(SUM(t.status = 'skipped'), 0) AS skipped,"
                " COALESCE(SUM(t.status = 'open'), 0) AS open,"
                " COUNT(DISTINCT CASE WHEN t.gold IS NOT NULL THEN t.message_id END) AS gold_items"
                " FROM rating_batches b LEFT JOIN rating_tasks t ON t.batch_id = b.id"
                " GROUP BY b.id ORDER BY b.id DESC",
            )
        for row in rows:
            row["source"] = json.loads(row["source"])
            row["blind"] = bool(row["blind"])
        return rows

    def batch_progress(self, batch_id: int | None = None) -> list[dict[str, Any]]:
        """Per (batch, assignee): ``total``, ``done``, ``skipped``, ``open``."""
        where, params = "", []
        if batch_id is not None:
            where, params = "WHERE t.batch_id = ?", [check_id(batch_id, "批次 ID")]
        with self._read() as conn:
            return self._rows(
                conn,
                "SELECT t.batch_id, b.name, t.assignee, COUNT(*) AS total, SUM(t.status = 'done') AS done,"
                " SUM(t.status = 'skipped') AS skipped, SUM(t.status = 'open') AS open"
                f" FROM rating_tasks t JOIN rating_batches b ON b.id = t.batch_id {where}"
                " GROUP BY t.batch_id, t.assignee ORDER BY t.batch_id DESC, t.assignee", params,
            )

    def task_summary(self, assignee: str) -> list[dict[str, Any]]:
        """This account's batches: ``batch_id``, ``name``, ``total``, ``done``, ``skipped``, ``open``."""
        return [r for r in self.batch_progress() if r["assignee"] == assignee]

    def get_task(self, task_id: int) -> dict[str, Any]:
        task_id = check_id(task_id, "任务 ID")
        with self._read() as conn:
            row = self._row(conn, "SELECT * FROM rating_tasks WHERE id = ?", (task_id,))
        if row is None:
            raise NotFoundError(f"评分任务不存在：{task_id}")
        row["gold"] = json.loads(row["gold"]) if row["gold"] else None
        return row

    def next_task(self, assignee: str, batch_id: int | None = None) -> dict[str, Any] | None:
        """The assignee's first open task (by batch, then position), as shown to a blind rater:
        ``task_id``, ``batch_id``, ``batch_name``, ``position``, ``reply``, ``context`` (the dialogue
        before the reply as role/content), and the batch's ``total`` / ``done`` / ``skipped`` for this
        account. No model version, owner, conversation or other raters' judgements. None: all done."""
        where, params = ["t.assignee = ?", "t.status = 'open'"], [assignee]
        if batch_id is not None:
            where.append("t.batch_id = ?")
            params.append(check_id(batch_id, "批次 ID"))
        with self._read(snapshot=True) as conn:
            task = self._row(conn, "SELECT t.id, t.batch_id, t.message_id, t.position, b.name FROM rating_tasks t"
                                   " JOIN rating_batches b ON b.id = t.batch_id"
                                   f" WHERE {' AND '.join(where)} ORDER BY t.batch_id, t.position LIMIT 1", params)
            if task is None:
                return None
            counts = self._row(conn, "SELECT COUNT(*) AS total, SUM(status = 'done') AS done,"
                                     " SUM(status = 'skipped') AS skipped FROM rating_tasks"
                                     " WHERE batch_id = ? AND assignee = ?", (task["batch_id"], assignee))
        path = self.get_path(task["message_id"])  # type: ignore[attr-defined]  (ConversationsMixin)
        return {"task_id": task["id"], "batch_id": task["batch_id"], "batch_name": task["name"],
                "position": task["position"], "reply": path[-1]["content"],
                "context": [{"role": m["role"], "content": m["content"]} for m in path[:-1]
                            if m["role"] in ("user", "assistant")], **counts}

    # -- judgements ----------------------------------------------------------------------------
    def _open_task(self, conn, task_id: int, assignee: str) -> dict[str, Any]:
        task = self._row(conn, "SELECT * FROM rating_tasks WHERE id = ?", (task_id,))
        if task is None:
            raise NotFoundError(f"评分任务不存在：{task_id}")
        if task["assignee"] != assignee:
            raise PermissionDeniedError("这项评分任务没有分配给你")
        if task["status"] != "open":
            raise ValidationError("这项评分任务已经完成或跳过了")
        return task

    def complete_task(self, task_id: int, assignee: str, *, thumb: int | None = None, tags: Iterable[str] = (),
                      comment: str | None = None, rewrite: str | None = None,
                      allowed_tags: Iterable[str] | None = None, **scores: int | None) -> dict[str, Any]:
        """Store the assignee's judgement of the task's reply (a rating and/or a thumb, validated as
        ``add_rating`` / ``set_thumb`` do) and close the task, all in one transaction."""
        task_id = check_id(task_id, "任务 ID")
        if thumb not in (None, 0) and (isinstance(thumb, bool) or thumb not in (1, -1)):
            raise ValidationError(f"点赞值必须是 1（赞）、-1（踩）或不选，收到 {show(thumb)}")
        has_rating = any(v is not None for v in scores.values()) or bool(tags) or _given(comment) or _given(rewrite)
        if not has_rating and not thumb:
            raise ValidationError("评分为空：请至少给出一项评分、标签、评语、改写或赞/踩")
        with self._write() as conn:
            task = self._open_task(conn, task_id, assignee)
            rating = None
            if has_rating:
                rating = self.add_rating(task["message_id"], assignee, tags=tags or (), comment=comment,  # type: ignore[attr-defined]
                                         rewrite=rewrite, allowed_tags=allowed_tags, **scores)
            if thumb:
                self.set_thumb(task["message_id"], assignee, thumb)  # type: ignore[attr-defined]
            conn.execute("UPDATE rating_tasks SET status = 'done', done_at = ? WHERE id = ?", (utc_now(), task_id))
        return {"task_id": task_id, "rating": rating, "thumb": thumb or 0}

    def skip_task(self, task_id: int, assignee: str) -> None:
        """Close the task without a judgement (it counts as skipped in the progress)."""
        task_id = check_id(task_id, "任务 ID")
        with self._write() as conn:
            self._open_task(conn, task_id, assignee)
            conn.execute("UPDATE rating_tasks SET status = 'skipped', done_at = ? WHERE id = ?", (utc_now(), task_id))

    # -- agreement -----------------------------------------------------------------------------
    def agreement_rows(self, batch_id: int | None = None, include_demo: bool = False) -> dict[str, list[dict]]:
        """What agreement is computed from: latest ``ratings`` (one key per dimension), ``thumbs``,
        ``comparisons`` and ``gold`` checks. With ``batch_id``: only judgements of that batch's
        finished tasks (comparisons are never part of a batch)."""
        task_join, params = "", []
        if batch_id is not None:
            task_join = (" JOIN rating_tasks t ON t.message_id = x.message_id AND t.assignee = x.rater"
                         " AND t.batch_id = ? AND t.status = 'done'")
            params = [check_id(batch_id, "批次 ID")]
        base = (" JOIN messages m ON m.id = x.message_id JOIN conversations c ON c.id = m.conversation_id"
                f"{task_join} WHERE {_DEMO}")
        gold_where = "" if batch_id is None else " AND t.batch_id = ?"
        with self._read(snapshot=True) as conn:
            if batch_id is not None and not conn.execute("SELECT 1 FROM rating_batches WHERE id = ?",
                                                         params).fetchone():
                raise NotFoundError(f"评分批次不存在：{batch_id}")
            ratings = self._rows(conn, "SELECT x.message_id, x.rater, x.scores FROM ratings x" + base
                                 + " AND x.is_latest = 1", (*params, include_demo))
            thumbs = self._rows(conn, "SELECT x.message_id, x.rater, x.value FROM thumbs x" + base
                                + " AND x.value != 0", (*params, include_demo))
            comparisons = [] if batch_id is not None else self._rows(
                conn, "SELECT k.id, k.message_a, k.message_b, k.choice, k.rater FROM comparisons k"
                " JOIN messages m ON m.id = k.message_a JOIN conversations c ON c.id = m.conversation_id"
                f" WHERE {_DEMO} ORDER BY k.id", (include_demo,))
            gold = self._rows(
                conn, "SELECT t.assignee, t.message_id, t.gold, COALESCE(h.value, 0) AS thumb, r.scores"
                " FROM rating_tasks t LEFT JOIN thumbs h ON h.message_id = t.message_id AND h.rater = t.assignee"
                " LEFT JOIN ratings r ON r.message_id = t.message_id AND r.rater = t.assignee AND r.is_latest = 1"
                f" WHERE t.gold IS NOT NULL AND t.status = 'done'{gold_where} ORDER BY t.id", params)
        for row in ratings:
            row.update(json.loads(row.pop("scores")))
        for row in gold:
            row["gold"] = json.loads(row["gold"])
            row["overall"] = json.loads(row.pop("scores") or "{}").get("overall")
        return {"ratings": ratings, "thumbs": thumbs, "comparisons": comparisons, "gold": gold}

    def agreement_report(self, batch_id: int | None = None, include_demo: bool = False) -> dict[str, Any]:
        """Krippendorff's alpha per dimension, thumbs and pairwise choices, per rater against the others,
        and gold agreement (``agreement.report``); ``scope`` says what it covers."""
        rating = self.rating  # type: ignore[attr-defined]  (FeedbackMixin)
        rows = self.agreement_rows(batch_id, include_demo)
        result = agreement.report(rows, {d.id: d.name for d in rating.dimensions.values()})
        result["scope"] = {"batch_id": batch_id, "include_demo": include_demo}
        return result
