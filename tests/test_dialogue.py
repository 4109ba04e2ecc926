"""Prompt formats (exact strings) and the context budget."""

import pytest

from mvp.model.dialogue import (
    ChatTemplateFormat,
    ContextBudget,
    ContextTooLongError,
    DialogueError,
    PlainFormat,
    SUMMARY_TEMPLATE,
    group_turns,
    system_with_notes,
)

SYSTEM = {"role": "system", "content": "你是咨询师。"}


def conv(n_turns, text="我最近心情不好，总是睡不着觉。"):
    history = []
    for i in range(n_turns):
        history.append({"role": "user", "content": f"{i}:{text}"})
        history.append({"role": "assistant", "content": f"{i}:听起来你很辛苦，能多说一些吗？"})
    history.append({"role": "user", "content": "最新的消息：今天又失眠了。"})
    return [SYSTEM] + history


def test_plain_format_exact_string():
    fmt = PlainFormat()
    messages = [
        {"role": "user", "content": "我睡不好"},
        {"role": "assistant", "content": "多久了？"},
        {"role": "user", "content": "两周"},
    ]
    assert fmt.render(messages) == "病人：我睡不好\n医生：多久了？\n病人：两周\n医生："
    assert fmt.stop_strings == ("\n病人：", "\n医生：")


def test_plain_format_custom_labels_and_system_instruction():
    fmt = PlainFormat(user_label="来访者", assistant_label="咨询师")
    messages = [SYSTEM, {"role": "user", "content": "你好"}]
    assert fmt.render(messages) == "你是咨询师。\n对话：\n来访者：你好\n咨询师："


def test_chat_template_format_exact_string(tiny_loaded):
    fmt = ChatTemplateFormat(tiny_loaded.tokenizer)
    out = fmt.render([SYSTEM, {"role": "user", "content": "你好"}])
    assert out == (
        "<|im_start|>system\n你是咨询师。<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_group_turns_doctor_led_start():
    history = [
        {"role": "assistant", "content": "你好，我是医生"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert group_turns(history) == [[0], [1, 2], [3]]


def count_chars(text):  # a deterministic "tokenizer": one token per character
    return len(text)


def test_budget_keeps_everything_when_it_fits():
    budget = ContextBudget(PlainFormat(), count_chars, 100_000)
    fit = budget.fit(conv(5), max_new_tokens=100)
    assert fit.dropped_turns == 0
    assert fit.messages == conv(5)
    assert fit.prompt_tokens == len(fit.prompt)


def test_budget_drops_oldest_whole_turns_keeps_system_and_newest():
    messages = conv(40)
    budget = ContextBudget(PlainFormat(), count_chars, 900)
    fit = budget.fit(messages, max_new_tokens=100)
    assert fit.dropped_turns > 0
    assert fit.prompt_tokens <= 800
    assert fit.messages[0] == SYSTEM
    assert fit.messages[-1] == messages[-1]
    # whole turns: the kept history starts with a client message and alternates
    history = fit.messages[1:]
    assert history[0]["role"] == "user"
    assert all(a["role"] != b["role"] for a, b in zip(history, history[1:]))
    # exactly the newest turns are kept, in order
    assert history == messages[len(messages) - len(history) :]
    assert len(messages[1:-1]) // 2 - fit.dropped_turns == (len(history) - 1) // 2


def test_budget_is_exact_with_a_real_tokenizer(tiny_engine):
    messages = conv(60)
    budget = ContextBudget(tiny_engine.format, tiny_engine.count_tokens, 600)
    fit = budget.fit(messages, max_new_tokens=64)
    assert fit.dropped_turns > 0
    assert tiny_engine.count_tokens(fit.prompt) == fit.prompt_tokens <= 600 - 64
    assert fit.prompt.startswith("<|im_start|>system\n你是咨询师。")
    assert fit.prompt.endswith("最新的消息：今天又失眠了。<|im_end|>\n<|im_start|>assistant\n")


def test_budget_error_when_newest_message_alone_is_too_long():
    budget = ContextBudget(PlainFormat(), count_chars, 300)
    messages = [SYSTEM, {"role": "user", "content": "长" * 400}]
    with pytest.raises(ContextTooLongError, match="太长"):
        budget.fit(messages, max_new_tokens=50)


def test_budget_counts_are_cached_per_message():
    calls = []

    def counting(text):
        calls.append(text)
        return len(text)

    budget = ContextBudget(PlainFormat(), counting, 1_000_000)
    messages = conv(50)
    budget.fit(messages, 10)
    calls.clear()
    messages.append({"role": "assistant", "content": "新的回复"})
    messages.append({"role": "user", "content": "新的问题"})
    budget.fit(messages, 10)
    # only the two new messages, the exact count of system+newest, and the final prompt
    per_message = [c for c in calls if c in ("新的回复", "新的问题")]
    assert sorted(per_message) == sorted(["新的回复", "新的问题"])
    assert len(calls) <= 4


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"role": "user", "content": 3}],
        [{"role": "robot", "content": "hi"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        ["not a dict"],
    ],
)
def test_malformed_messages_rejected(bad):
    budget = ContextBudget(PlainFormat(), count_chars, 1000)
    with pytest.raises(DialogueError):
        budget.fit(bad, 10)


# -- pinned notes, the session summary, the first visible turn (issues 12 and 17) ----------------
RISK = "风险提示：来访者在第 2 轮说过“有时候真想一了百了”，请持续关注安全。"
SUMMARY = "来访者因失眠和工作压力来访；母亲去年去世；已约定记录一周睡眠。"


def test_thirty_turns_over_a_small_budget_keep_system_risk_newest_and_summary():
    messages = conv(30)
    budget = ContextBudget(PlainFormat(), count_chars, 700)
    fit = budget.fit(messages, max_new_tokens=100, pinned=[RISK], summary=SUMMARY)
    history = messages[1:]
    assert fit.dropped_turns > 16 and fit.summary_used
    assert fit.prompt_tokens == len(fit.prompt) <= 600
    system = fit.messages[0]["content"]
    assert system.startswith(SYSTEM["content"]) and RISK in system
    assert SUMMARY_TEMPLATE.format(summary=SUMMARY) in system
    assert fit.prompt.count("对话：") == 1  # one system block, not one per note
    assert fit.messages[-1] == messages[-1] and fit.prompt.endswith("最新的消息：今天又失眠了。\n医生：")
    # the cut: the model sees exactly history[first_visible:], which starts a whole turn
    assert fit.messages[1:] == history[fit.first_visible:]
    assert group_turns(history)[fit.dropped_turns][0] == fit.first_visible
    assert history[fit.first_visible]["role"] == "user"
    assert fit.messages[:1] == system_with_notes([SYSTEM], [RISK], SUMMARY)  # what training data can show


def test_the_risk_note_survives_when_every_older_turn_is_dropped():
    messages = conv(30)
    tight = len(PlainFormat().render([{"role": "system", "content": SYSTEM["content"] + "\n\n" + RISK},
                                      messages[-1]])) + 20
    fit = ContextBudget(PlainFormat(), count_chars, tight + 10).fit(messages, 10, pinned=[RISK], summary=SUMMARY)
    assert RISK in fit.prompt and fit.messages[-1] == messages[-1]
    assert fit.first_visible == len(messages) - 2 and fit.dropped_turns == 30
    assert not fit.summary_used and SUMMARY not in fit.prompt  # no room: the optional part goes first
    with pytest.raises(ContextTooLongError):  # the note is never cut to make room
        ContextBudget(PlainFormat(), count_chars, tight - 30).fit(messages, 10, pinned=[RISK])


def test_no_summary_when_nothing_is_dropped_and_room_is_made_for_it_when_turns_are():
    budget = ContextBudget(PlainFormat(), count_chars, 100_000)
    fit = budget.fit(conv(5), 100, pinned=[RISK], summary=SUMMARY)
    assert fit.dropped_turns == fit.first_visible == 0 and not fit.summary_used
    assert SUMMARY not in fit.prompt and RISK in fit.prompt
    small = ContextBudget(PlainFormat(), count_chars, 900)
    without = small.fit(conv(30), 100)
    with_summary = small.fit(conv(30), 100, summary=SUMMARY)
    assert with_summary.summary_used and with_summary.first_visible > without.first_visible
    assert with_summary.prompt_tokens <= 800 and without.prompt_tokens <= 800


def test_without_notes_the_prompt_is_exactly_as_before():
    budget = ContextBudget(PlainFormat(), count_chars, 900)
    fit = budget.fit(conv(30), 100)
    assert fit.messages[0] == SYSTEM and not fit.summary_used
    assert fit.messages[1:] == conv(30)[1:][fit.first_visible:]


def test_first_visible_with_a_doctor_led_start():
    history = [{"role": "assistant", "content": "你好，我是医生。" * 5}]
    for i in range(10):
        history += [{"role": "user", "content": f"{i}:我睡不好。" * 3}, {"role": "assistant", "content": "嗯。" * 5}]
    history.append({"role": "user", "content": "最新"})
    fit = ContextBudget(PlainFormat(), count_chars, 200).fit(history, 50)
    assert fit.dropped_turns > 1
    assert group_turns(history)[fit.dropped_turns][0] == fit.first_visible
    assert fit.messages == history[fit.first_visible:]


def test_summary_and_risk_note_fit_a_real_tokenizer(tiny_engine):
    messages = conv(30)
    budget = ContextBudget(tiny_engine.format, tiny_engine.count_tokens, 500)
    fit = budget.fit(messages, 64, pinned=[RISK], summary=SUMMARY)
    assert fit.summary_used and tiny_engine.count_tokens(fit.prompt) == fit.prompt_tokens <= 500 - 64
    assert fit.prompt.startswith("<|im_start|>system\n你是咨询师。\n\n" + RISK)
    assert fit.prompt.count("<|im_start|>system") == 1 and SUMMARY in fit.prompt


@pytest.mark.parametrize("kwargs", [{"pinned": [3]}, {"summary": ["x"]}])
def test_malformed_notes_rejected(kwargs):
    with pytest.raises(DialogueError):
        ContextBudget(PlainFormat(), count_chars, 1000).fit(conv(1), 10, **kwargs)


def test_a_new_turn_costs_the_same_at_50_and_500_turns():
    """The budget walks back from the newest turn and stops: older turns are not even looked up."""
    looked_up = {}
    for turns in (50, 500):
        budget = ContextBudget(PlainFormat(), count_chars, 900)
        calls = []
        original = budget.message_tokens
        budget.message_tokens = lambda m: calls.append(m) or original(m)
        messages = [SYSTEM]
        for i in range(turns):  # the same length at every turn number
            messages += [{"role": "user", "content": f"{i:04d}:我总是睡不着觉。"},
                         {"role": "assistant", "content": f"{i:04d}:能多说一些吗？"}]
        messages.append({"role": "user", "content": "最新的消息：今天又失眠了。"})
        budget.fit(messages, 100, pinned=[RISK], summary=SUMMARY)
        calls.clear()
        fit = budget.fit(messages + [{"role": "assistant", "content": "嗯。"},
                                     {"role": "user", "content": "又睡不着了。"}], 100, pinned=[RISK], summary=SUMMARY)
        looked_up[turns] = (len(calls), fit.prompt_tokens, fit.first_visible - 2 * turns)
    assert looked_up[50] == looked_up[500]
    assert looked_up[50][0] < 2 * 50  # fewer than the messages of even the short conversation
