"""Rating assignments through the service: batches (admin), blind tasks (clinicians), agreement.

An admin makes a batch either from chosen conversations (every model reply in them) or from a model
version answering the client turns of bundled sample cases (mvp/counsel/cases.py): for the latter the
service generates that version's replies here, into conversations owned by the admin who made the
batch and marked with the case id, so they never appear in a clinician's own list and hold no
client's data (shipped case text and model output only). Generation is bounded by
``MAX_VERSION_ITEMS`` replies.

A clinician rates ONLY their own conversations (``_message`` in base.py), except for the replies
assigned to them: ``submit_task`` checks the assignment, not the ownership, and the store writes the
judgement as a normal rating / thumb in the same transaction that closes the task.
"""

from __future__ import annotations

from collections.abc import Callable

from mvp.counsel.cases import load_cases
from mvp.store.validation import check_id, check_label

from .base import ServiceBase, ServiceError

MAX_VERSION_ITEMS = 40        # replies generated for one batch from a model version
DEFAULT_TURNS_PER_CASE = 2    # client turns answered per sample case
MAX_CONVERSATIONS = 50
Progress = Callable[[int, int, str], None]


class TasksMixin(ServiceBase):
    # -- admin: batches ------------------------------------------------------------------------
    def raters(self, name: str) -> list[str]:
        """Admin: accounts that can be given rating tasks (enabled clinicians and admins)."""
        self.require_admin(name)
        return [u["name"] for u in self.store.list_users() if u["role"] in ("clinician", "admin")
                and not u.get("disabled")]

    def create_batch_from_conversations(self, name: str, batch_name: str, conversation_ids: list[int], k: int,
                                        assignees: list[str], gold: dict | None = None) -> dict:
        """Admin: every complete model reply of the chosen conversations, each to k of ``assignees``."""
        self.require_admin(name)
        if not isinstance(conversation_ids, (list, tuple)) or not conversation_ids:
            raise ServiceError("请至少选择一段对话（conversation_ids 是对话 ID 的列表）")
        if len(conversation_ids) > MAX_CONVERSATIONS:
            raise ServiceError(f"一个批次最多 {MAX_CONVERSATIONS} 段对话")
        conversation_ids = list(dict.fromkeys(check_id(c, "对话 ID") for c in conversation_ids))
        check_label(batch_name, "批次名称")
        self._check_assignees(k, assignees)
        replies = []
        for cid in conversation_ids:
            for turn in self.store.get_history(cid, include_notices=False):  # NotFound for a bad id
                if turn["role"] == "user":
                    replies += [m["id"] for m in self.store.list_alternatives(turn["id"])
                                if m["status"] == "complete" and m["content"].strip()]
        if not replies:
            raise ServiceError("所选对话里还没有模型回复")
        source = {"kind": "conversations", "conversation_ids": conversation_ids}
        return self._create_batch(name, batch_name, replies, k, assignees, source, gold)

    def create_batch_from_version(self, name: str, batch_name: str, version_id: int | None, k: int,
                                  assignees: list[str], n_cases: int = 5, turns_per_case: int = DEFAULT_TURNS_PER_CASE,
                                  progress: Progress | None = None) -> dict:
        """Admin: the version's replies to the first client turns of ``n_cases`` sample cases
        (at most ``MAX_VERSION_ITEMS`` replies), generated now, then assigned like any batch."""
        admin = self.require_admin(name)
        for value, what in ((n_cases, "个案数"), (turns_per_case, "每个个案的轮数")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ServiceError(f"{what}必须是正整数，收到 {value!r}")
        if n_cases * turns_per_case > MAX_VERSION_ITEMS:
            raise ServiceError(f"最多生成 {MAX_VERSION_ITEMS} 条回复：请减少个案数或轮数"
                               f"（现在是 {n_cases} × {turns_per_case}）")
        version = self.store.get_model_version(version_id or self.engines.primary_id)
        # Checked before any reply is generated: nothing is written for a batch that would be refused.
        check_label(batch_name, "批次名称")
        self._check_assignees(k, assignees)
        cases = load_cases()[:n_cases]
        total = sum(min(turns_per_case, len(c.client_lines)) for c in cases)
        replies, done = [], 0
        stage = self.stages.default
        with self._one_generation(admin["name"]):
            for case in cases:
                cid = self.store.create_conversation(admin["name"], stage.id, version["id"], case_id=case.id,
                                                     title=f"评分批次 · {case.title}")
                conversation = self.store.get_conversation(cid)
                for line in case.client_lines[:turns_per_case]:
                    detection = self.detect(line)
                    uid = self.store.add_user_message(cid, line, flag=self._flag(detection))  # type: ignore[attr-defined]
                    events = list(self._reply(conversation, uid, None, detection, version))  # type: ignore[attr-defined]
                    replies.append(events[-1].message["id"])
                    done += 1
                    if progress is not None:
                        progress(done, total, case.title)
        source = {"kind": "model_version", "model_version_id": version["id"],
                  "cases": [c.id for c in cases], "turns_per_case": turns_per_case}
        return self._create_batch(name, batch_name, replies, k, assignees, source, None)

    def _check_assignees(self, k, assignees) -> None:
        """Every assignee an enabled clinician or admin, and 1 <= k <= their number."""
        if not isinstance(assignees, (list, tuple)) or not assignees:
            raise ServiceError("请至少选择一位评分人（assignees 是账号名的列表）")
        for rater in assignees:
            user = self.store.get_user(rater) if isinstance(rater, str) and rater else None
            if user is None or user.get("disabled") or user["role"] not in ("clinician", "admin"):
                raise ServiceError(f"评分人必须是已启用的临床或管理员账号，收到 {str(rater)[:40]!r}")
        n = len(set(assignees))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ServiceError(f"每条回复的评分人数 k 必须在 1 到所选评分人数（{n}）之间，收到 {str(k)[:20]}")

    def _create_batch(self, name, batch_name, replies, k, assignees, source, gold) -> dict:
        self._check_assignees(k, assignees)
        result = self.store.create_rating_batch(batch_name, name, k, replies, list(assignees), source=source,
                                                gold=gold)
        self.store.add_audit(name, "rating_batch_created", result["batch_id"],
                             {"items": result["items"], "k": k, "assignees": len(set(assignees)),
                              "kind": source["kind"]})
        return result

    def batches(self, name: str) -> list[dict]:
        """Admin: every batch with its progress (items, tasks, done, skipped, open)."""
        self.require_admin(name)
        return self.store.list_rating_batches()

    def batch_progress(self, name: str, batch_id: int | None = None) -> list[dict]:
        """Admin: progress per batch and clinician."""
        self.require_admin(name)
        return self.store.batch_progress(batch_id)

    def agreement(self, name: str, batch_id: int | None = None) -> dict:
        """Admin: Krippendorff's alpha over all judgements (or one batch's), see mvp/store/agreement.py."""
        self.require_admin(name)
        return self.store.agreement_report(batch_id or None)

    # -- clinicians: tasks -----------------------------------------------------------------------
    def _rater(self, name: str) -> dict:
        user = self.user(name)
        if user["role"] == "demo":
            raise ServiceError("演示账号没有评分任务")
        return user

    def my_tasks(self, name: str) -> list[dict]:
        """This account's batches with progress: batch_id, name, total, done, skipped, open."""
        return self.store.task_summary(self._rater(name)["name"])

    def next_task(self, name: str, batch_id: int | None = None) -> dict | None:
        """The next open task, blind (context, reply, progress); None when everything is done."""
        return self.store.next_task(self._rater(name)["name"], batch_id or None)

    def submit_task(self, name: str, task_id: int, scores: dict | None = None, thumb: int | None = None,
                    tags: list | None = None, comment: str | None = None, rewrite: str | None = None) -> dict:
        """Judge an assigned reply: scores per dimension of config/rating.yaml, thumb 1 / -1, tags,
        comment, rewrite; validated exactly as a normal rating."""
        user = self._rater(name)
        if scores is not None and not isinstance(scores, dict):
            raise ServiceError(f"scores 必须是 {{维度: 分数}} 的映射，收到 {type(scores).__name__}")
        scores = {k: v for k, v in (scores or {}).items() if v is not None}
        unknown = set(scores) - set(self.rating.dimensions)
        if unknown:
            raise ServiceError(f"未知的评分维度：{'、'.join(sorted(map(str, unknown)))}")
        return self.store.complete_task(task_id, user["name"], thumb=thumb or None, tags=tags or [],
                                        comment=comment, rewrite=rewrite, allowed_tags=self.rating.tags, **scores)

    def skip_task(self, name: str, task_id: int) -> dict:
        user = self._rater(name)
        self.store.skip_task(task_id, user["name"])
        return {"task_id": task_id, "status": "skipped"}
