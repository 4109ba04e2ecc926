"""The feedback store: the one module that owns feedback.db (schema, migrations, every SQL statement).

The UI, the safety and assessment modules and train/ call this API; nobody else writes SQL.
Browse the file with ``datasette feedback.db``.

    from mvp.store import Store, ValidationError
    store = Store("feedback.db")                      # creates / migrates the file; WAL mode
    store.add_user("li", "a-long-password", "clinician")
    mv = store.register_model_version("models/demo", quantization="none")
    conv = store.create_conversation("li", "intake", mv)
    u = store.add_user_message(conv, "最近总是睡不着")
    r = store.add_assistant_message(conv, u, "听起来这段时间很辛苦……", gen_params={...}, metrics={...})
    store.add_rating(r, "li", overall=4, empathy=5, tags=["过长"], comment="...")

Safe under Gradio's worker threads: each call opens its own connection; writes are serialised (one
lock per file in this process, ``BEGIN IMMEDIATE`` and a 10 s busy timeout across processes) and each
is one transaction, so a refused call leaves no row behind. Errors: ``StoreError`` and its subclasses
``ValidationError`` (bad input), ``NotFoundError`` and ``PermissionDeniedError``, with Chinese messages
meant to be shown to clinicians as they are. ``Store(path, scrub=fn)`` applies ``fn(str) -> str`` to
client and model text, comments, rewrites, assessment answers and flag evidence before storing them.
No IP address or other network detail is stored anywhere.

Tables (see ``schema.py``): migrations, users, model_versions, conversations, messages, ratings,
thumbs, comparisons, flags, assessments, assessment_items, deletion_log, audit_log, rating_batches,
rating_tasks, summaries, stage_events.

API (ids are ints; JSON fields go in and come out as dicts/lists; timestamps are ISO 8601 UTC):
  users        add_user(name, password, role="clinician") -> dict; authenticate(name, password) -> bool;
               get_user(name) -> dict | None; list_users(); count_users(*, enabled_only=False);
               disable_user(name); enable_user(name); set_password(name, password)
  models       register_model_version(base_model, adapter=None, quantization="none",
               backend="inprocess", served_name=None, base_url=None, *, label=None, parent_id=None,
               data_manifest=None, metrics=None, status="servable") -> id (idempotent);
               get_model_version(id); list_model_versions(); set_model_version_metrics(id, metrics);
               set_release_status(id, status, release=None) (status: candidate | servable | refused;
               release: the release gate's record, train/gate.py); rows carry ``status`` and ``release``
  conversations create_conversation(user, stage_id, model_version_id=None, is_demo=False,
               case_id=None, title=None) -> id; get_conversation(id); list_conversations(user=None,
               limit=50, offset=0, include_demo=True) (with reply_count, unrated_count, open_flags); set_stage(id, stage_id); set_title(id, title);
               delete_conversation(id, by_user) -> {"conversation_id", "messages_deleted"}
  messages     add_user_message(conversation_id, content, stage_id=None) -> id;
               add_assistant_message(conversation_id, parent_id, content, stage_id=None,
               model_version_id=None, gen_params=None, metrics=None, status="complete", safety=None,
               make_active=True) -> id; add_notice(conversation_id, content, stage_id=None) -> id;
               get_message(id); get_history(conversation_id, include_notices=True);
               get_path(message_id); list_alternatives(message_id); count_alternatives(parent_id);
               set_active(message_id)
  feedback     add_rating(message_id, rater, *, tags=(), comment=None, rewrite=None, allowed_tags=None,
               **scores) -> {"id", "revision"} (one keyword per dimension of config/rating.yaml:
               overall=4, empathy=5; rows come back with one key per dimension; ``store.rating``);
               get_rating(message_id, rater); latest_ratings(message_id=None, rater=None,
               conversation_id=None); rating_history(message_id, rater);
               set_thumb(message_id, rater, value); get_thumb(message_id, rater) -> int;
               add_comparison(message_a, message_b, choice, rater, *, shown_left,
               activate_choice=True) -> id; list_comparisons(conversation_id=None)
  safety       add_flag(conversation_id, category, evidence=None, source="rules", message_id=None)
               -> id; list_flags(include_reviewed=False, conversation_id=None, limit=500);
               count_open_flags(); mark_flag_reviewed(flag_id, reviewer, note=None)
  assessment   start_assessment(conversation_id, instrument) -> id; record_item(assessment_id,
               item_no, question, answer, score, method, needs_review=False, message_id=None);
               correct_item(assessment_id, item_no, clinician_score, corrected_by);
               finish_assessment(assessment_id, total, band, status="finished");
               get_assessment(id); list_assessments(conversation_id);
               save_screening_state(assessment_id, state, paused=False); running_assessment(conversation_id)
  export       export_snapshot(include_demo=False, include_disabled=False) -> dict of lists;
               export_conversations / export_messages / export_ratings(..., all_revisions=False) /
               export_thumbs / export_comparisons / export_assessment_items
  assignments  create_rating_batch(name, created_by, k, message_ids, assignees, *, source=None,
               blind=True, gold=None) -> {"batch_id", "items", "tasks", "owner_assigned"};
               list_rating_batches(); batch_progress(batch_id=None); task_summary(assignee);
               get_task(id); next_task(assignee, batch_id=None) -> blind view | None;
               complete_task(task_id, assignee, *, thumb=None, tags=(), comment=None, rewrite=None,
               allowed_tags=None, **scores); skip_task(task_id, assignee)
  agreement    agreement_rows(batch_id=None, include_demo=False); agreement_report(batch_id=None,
               include_demo=False) (Krippendorff's alpha, computed in ``agreement.py``)
  memory       add_summary(conversation_id, content, author, author_kind, *, first_message_id=None,
               last_message_id=None, first_turn=0, last_turn=0, state=None, source_conversation_id=None)
               -> id; list_summaries(cid); latest_summary(cid); get_summary(id); add_stage_event(cid,
               kind, from_stage, to_stage, actor, message_id=None, detail=None) -> id;
               list_stage_events(cid); create_session(previous_id, user, model_version_id=None) -> id;
               list_sessions(case_key)
  audit        add_audit(actor, action, target=None, detail=None) -> id; list_audit(limit=200)
  dashboard    ratings_per_day(utc_offset_hours=8); mean_scores_by_version(); win_rates();
               tag_frequencies(); clinician_activity(); summary_counts();
               arena_outcomes() (one row per comparison of two versions: the ranking's input)
"""

from __future__ import annotations

from .assessments import AssessmentsMixin
from .assignments import AssignmentsMixin
from .audit import AuditMixin
from .conversations import ConversationsMixin, active_path
from .errors import NotFoundError, PermissionDeniedError, StoreError, ValidationError
from .export import ExportMixin
from .feedback import FeedbackMixin
from .flags import FlagsMixin
from .memory import MemoryMixin, case_key_of
from .models import ModelsMixin
from .schema import BUSY_TIMEOUT_S, LATEST_VERSION, MIGRATIONS, migrate
from .stats import StatsMixin
from .users import UsersMixin
from .validation import (
    BACKENDS,
    CHOICES,
    RELEASE_STATUSES,
    FLAG_SOURCES,
    MAX_COMMENT_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_REPLY_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MIN_PASSWORD_CHARS,
    ROLES,
)
from .retention import RetentionMixin
from .rating import RATING_FILE, Dimension, RatingConfig, RatingConfigError, load_rating_config


class Store(
    UsersMixin,
    ModelsMixin,
    ConversationsMixin,
    FeedbackMixin,
    FlagsMixin,
    AssessmentsMixin,
    ExportMixin,
    StatsMixin,
    AuditMixin,
    RetentionMixin,
    AssignmentsMixin,
    MemoryMixin,
):
    """feedback.db: ``Store(path, scrub=None, scrub_demo=None)``. See the module docstring for the API."""


__all__ = [
    "BACKENDS",
    "BUSY_TIMEOUT_S",
    "CHOICES",
    "FLAG_SOURCES",
    "LATEST_VERSION",
    "MAX_COMMENT_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_REPLY_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MIGRATIONS",
    "MIN_PASSWORD_CHARS",
    "NotFoundError",
    "PermissionDeniedError",
    "ROLES",
    "RATING_FILE",
    "RELEASE_STATUSES",
    "Dimension",
    "RatingConfig",
    "RatingConfigError",
    "load_rating_config",
    "Store",
    "StoreError",
    "ValidationError",
    "active_path",
    "case_key_of",
    "migrate",
]
