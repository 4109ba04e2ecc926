"""The clinician web app (Gradio), the only part of the project that imports gradio.

    layout.py    build_ui(service, model_info): components and event wiring, nothing more
    handlers.py  what each UI event does: one service call, what to show
    api.py       the named API endpoints for gradio_client
    render.py    how messages, dropdowns and tables are shown
    page.py      the CSS, the head script and the JavaScript snippets events run in the browser
    common.py    user errors as toasts, the stream throttle, the logged-in user
    tasks.py     the 待评分任务 and 评分批次 tabs, the dashboard's agreement section, their API
    task_handlers.py  what those events do, and their tables
    memory.py    the 会谈摘要 panel, the cut marker in the chat, the stage suggestion banner
"""

from .layout import build_ui
from .memory import CSS as _MEMORY_CSS
from .page import CSS as _PAGE_CSS
from .page import HEAD

CSS = _PAGE_CSS + _MEMORY_CSS

__all__ = ["CSS", "HEAD", "build_ui"]
