"""Clinicians' judgements through the service: blind comparisons, detailed ratings, thumbs.

The dimensions of a rating come from config/rating.yaml (`self.rating`); the store validates the
scores against the same settings, so the service passes them on without a list of its own.
"""

from __future__ import annotations

from mvp.store import CHOICES

from .base import ServiceBase, ServiceError


class FeedbackMixin(ServiceBase):
    # -- blind comparison --------------------------------------------------------------------------
    def compare(self, name: str, conversation_id: int, opponent_version_id: int | None = None) -> dict:
        """Two replies to the newest client message, in random order, blind to their source.

        With an opponent version, one reply comes from it and one from the primary model;
        otherwise both are samples of the primary model (different seeds)."""
        user, conversation = self._conversation(name, conversation_id)
        if user["role"] == "demo":
            raise ServiceError("演示账号不能比较回复")
        self._no_screening(conversation["id"])
        parent = self._last_user_message(conversation["id"])
        detection = self.detect(parent["content"], self.client_context(conversation["id"], parent["id"]))
        self._flag_again(conversation["id"], parent["id"], detection)
        versions: list[dict | None] = [None, None]
        if opponent_version_id not in (None, "", self.engines.primary_id):
            versions[1] = self.store.get_model_version(opponent_version_id)
            if versions[1].get("status") == "refused":
                raise ServiceError(f"模型版本 {versions[1]['id']} 未通过发布检查（{'；'.join((versions[1].get('release') or {}).get('reasons') or [])}），不在盲评中提供")
        # Generate in random order: otherwise the opponent's reply always has the larger message id
        # and the arena is not blind to anyone reading the ids over the API.
        self._rng.shuffle(versions)
        with self._one_generation(user["name"]):
            ids = self._generate_pair(conversation, parent, detection, versions)
        self._rng.shuffle(ids)
        left, right = (self.store.get_message(i) for i in ids)
        return {"message_a": left["id"], "message_b": right["id"], "text_a": left["content"], "text_b": right["content"]}

    def _generate_pair(self, conversation, parent, detection, versions) -> list[int]:
        ids = []
        for version in versions:
            engine = self.engines.get(version) if version else self.engines.primary
            params = engine.default_params()
            params.seed = self._rng.randrange(2**31)
            events = list(self._reply(conversation, parent["id"], params, detection, version, make_active=False))
            ids.append(events[-1].message["id"])
        return ids

    def choose(self, name: str, message_a: int, message_b: int, choice: str) -> dict:
        """Record which of the two displayed replies (a = left, b = right) is better; the chosen
        reply (the left one on a tie) continues the conversation."""
        user, a = self._message(name, message_a)
        _, b = self._message(name, message_b)
        if choice not in CHOICES:
            raise ServiceError(f"选择必须是 {' / '.join(CHOICES)} 之一，收到 {choice!r}")
        if user["role"] == "demo":
            raise ServiceError("演示账号不能评分或比较")
        pair = {a["id"], b["id"]}
        if any({c["message_a"], c["message_b"]} == pair for c in self.store.list_comparisons(a["conversation_id"])):
            raise ServiceError("这两条回复已经比较过了：每次比较只能选择一次")
        comparison_id = self.store.add_comparison(a["id"], b["id"], choice, user["name"], shown_left=a["id"])
        keep = {"a": a, "b": b, "tie": a}.get(choice)
        if choice == "tie":
            self.store.set_active(a["id"])
        return {"comparison_id": comparison_id, "active_message": keep["id"] if keep else None}

    # -- ratings ---------------------------------------------------------------------------------
    def rate(self, name: str, message_id: int, **fields) -> dict:
        """A detailed rating (scores 1-5, tags, comment, rewrite); a new revision each time."""
        user, message = self._message(name, message_id)
        if user["role"] == "demo":
            raise ServiceError("演示账号不能评分")
        unknown = set(fields) - set(self.rating.dimensions) - {"tags", "comment", "rewrite"}
        if unknown:
            raise ServiceError(f"未知的评分字段：{sorted(unknown)}")
        return self.store.add_rating(message["id"], user["name"], allowed_tags=self.rating.tags, **fields)

    def thumb(self, name: str, message_id: int, value: int) -> dict:
        user, message = self._message(name, message_id)
        if user["role"] == "demo":
            raise ServiceError("演示账号不能评分")
        self.store.set_thumb(message["id"], user["name"], value)
        return {"message_id": message["id"], "value": value}

    def ratings_of(self, name: str, message_id: int) -> dict | None:
        user, message = self._message(name, message_id)
        return self.store.get_rating(message["id"], user["name"])
