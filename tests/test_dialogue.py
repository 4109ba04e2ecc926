"""Prompt formats (exact strings) and the context budget."""

import pytest

from mvp.model.dialogue import (
    ChatTemplateFormat,
    ContextBudget,
    ContextTooLongError,
    DialogueError,
    PlainFormat,
    group_turns,
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
