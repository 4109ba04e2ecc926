"""Exceptions raised by the feedback store.

Every message is written for the person at the screen (a clinician or an admin), in Chinese, and says
what was wrong and, where it helps, how to fix it. The UI shows ``str(error)`` as it is.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: anything the store refuses or cannot do."""


class ValidationError(StoreError, ValueError):
    """The input was malformed or out of range; nothing was written."""


class NotFoundError(StoreError, LookupError):
    """A user, conversation, message, model version, flag or assessment does not exist."""


class PermissionDeniedError(StoreError):
    """The account may not do this (a demo account rating, a disabled account, a non-admin review)."""
