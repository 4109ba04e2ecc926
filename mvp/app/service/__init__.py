"""What the clinician app does, as plain Python: the UI and the API endpoints only call this.

One `Service` holds the store, the stages, the rating settings and the engines (one per model
version, loaded on demand). Every method takes the acting user's name and checks what that account
may do, so the browser UI and the gradio_client API share the same validation and permissions.

The façade is composed of one part per concern:
  base.py      user errors, streamed events, the engine pool, account and ownership checks
  chat.py      conversations and chat turns (send, regenerate, stop)
  memory.py    session summary (会谈摘要) in the prompt, corrections, stage suggestions, sessions of a case
  feedback.py  blind comparisons, ratings, thumbs
  admin.py     safety review queue, dashboard figures, model versions, training-data export
  tasks.py     rating batches and blind assigned tasks (overlap between raters), agreement
  ../screening.py  guided PHQ-9 / GAD-7 screenings
"""

from __future__ import annotations

from mvp.app.screening import ScreeningMixin
from mvp.store import CHOICES, NotFoundError, PermissionDeniedError, StoreError, ValidationError

from .admin import AdminMixin
from .base import MAX_LOADED_ENGINES, USER_ERRORS, EnginePool, Event, ServiceError, clean_model_text
from .chat import ChatMixin
from .feedback import FeedbackMixin
from .tasks import TasksMixin
from .memory import MemoryMixin

COMPARE_CHOICES = CHOICES  # declared once, in mvp.store.validation


class Service(ChatMixin, MemoryMixin, FeedbackMixin, AdminMixin, TasksMixin, ScreeningMixin):
    """``Service(store, stages, engines, rating=None, rules=None, resources=None, model_check_engine=None)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_screening()


__all__ = [
    "COMPARE_CHOICES",
    "MAX_LOADED_ENGINES",
    "EnginePool",
    "Event",
    "NotFoundError",
    "PermissionDeniedError",
    "Service",
    "ServiceError",
    "StoreError",
    "USER_ERRORS",
    "ValidationError",
    "clean_model_text",
]
