"""How the UI shows session memory: the cut marker's place, and client or clinician text kept inert."""

from mvp.app.ui.memory import CUT_MARKER, cut_message_id, mark_cut, summary_info, suggestion_text
from mvp.counsel.stages import load_stages


def test_cut_marker_sits_on_the_first_message_the_newest_reply_saw():
    history = [{"id": 1, "role": "user"}, {"id": 2, "role": "assistant", "gen_params": {}},
               {"id": 3, "role": "user"},
               {"id": 4, "role": "assistant", "gen_params": {"context": {"first_message_id": 3, "dropped_turns": 1}}}]
    messages = [{"role": m["role"], "content": f"m{m['id']}"} for m in history]
    ids = [m["id"] for m in history]
    marked, same_ids = mark_cut(messages, ids, cut_message_id(history))
    assert same_ids == ids and CUT_MARKER in marked[2]["content"] and marked[2]["content"].endswith("m3")
    assert all(CUT_MARKER not in m["content"] for i, m in enumerate(marked) if i != 2)
    history[-1]["gen_params"]["context"]["dropped_turns"] = 0
    assert cut_message_id(history) is None  # nothing dropped: no marker


def test_summary_panel_text_is_inert():
    view = {"summary": {"author": "<b>li</b>", "author_kind": "clinician", "first_turn": 1, "last_turn": 4,
                        "created_at": "2026-12-01T10:00:00+00:00", "state": None},
            "conversation": {"is_demo": False}, "session_no": 2, "case_key": "<i>x</i>", "dropped_turns": 4,
            "suggestion": {"to_stage": "assessment", "detail": {"reasons": ["![x](http://evil.example/a.png)"]}}}
    text = summary_info(view)
    assert "<b>" not in text and "&lt;b&gt;li&lt;/b&gt;" in text and "覆盖第 1–4 轮" in text and "第 2 次会谈" in text
    banner = suggestion_text(view, load_stages())
    assert "评估与问题澄清" in banner and "![x](" not in banner and "http://" not in banner  # escaped, no image
