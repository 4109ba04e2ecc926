"""The stages file: the shipped one is valid; malformed files name the file and the key."""

import pytest

from mvp.counsel.stages import StageFileError, build_messages, load_stages


def test_shipped_stages_file():
    stages = load_stages()
    ids = [s.id for s in stages]
    assert ids == ["intake", "assessment", "intervention", "consolidation"]
    names = [s.name for s in stages]
    assert names == ["建立关系与初始访谈", "评估与问题澄清", "干预", "巩固与结束"]
    assert stages.default.id == "intake"
    assert all(s.instruction and s.description for s in stages)
    assert stages.choices()[0] == ("建立关系与初始访谈", "intake")


def write(tmp_path, text):
    path = tmp_path / "stages.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, key",
    [
        ("stages: []", "stages"),
        ("nope: 1", "stages"),
        ("stages:\n  - id: a\n    name: A\n    description: d\n", "stages[0].instruction"),
        ("stages:\n  - id: 9x\n    name: A\n    description: d\n    instruction: i\n", "stages[0].id"),
        ("stages:\n  - id: a\n    name: A\n    description: d\n    instruction: i\n    colour: red\n", "colour"),
        ("stages:\n  - id: a\n    name: A\n    description: d\n    instruction: i\n"
         "  - id: a\n    name: B\n    description: d\n    instruction: i\n", "stages[1].id"),
        ("stages: [unclosed", "YAML"),
    ],
)
def test_malformed_file_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(StageFileError) as info:
        load_stages(path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(StageFileError, match="找不到"):
        load_stages(tmp_path / "none.yaml")


def test_unknown_stage_id():
    with pytest.raises(StageFileError, match="未知的治疗阶段"):
        load_stages().get("nope")


def test_stage_switch_applies_from_next_turn():
    stages = load_stages()
    history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好"},
               {"role": "user", "content": "我想聊聊"}]
    first = build_messages(stages.get("intake").instruction, history)
    second = build_messages(stages.get("intervention").instruction, history)
    assert first[0] == {"role": "system", "content": stages.get("intake").instruction}
    assert second[0]["content"] == stages.get("intervention").instruction
    assert first[1:] == second[1:] == history
