"""The engine: streaming, stopping, cancelling, seeds, metadata, quantized loading, adapters."""

import threading

import pytest

from mvp.model.engine import Engine, GenerationParams, ReplyResult
from mvp.model.loader import ModelLoadError, ModelSpec, load_model, quantization_config

MESSAGES = [
    {"role": "system", "content": "你是一名心理咨询师。"},
    {"role": "user", "content": "我最近总是睡不着，心情很低落。"},
]


def test_stream_yields_deltas_that_add_up_to_the_result(tiny_engine):
    gen = tiny_engine.start(MESSAGES, GenerationParams(max_new_tokens=24, seed=1))
    deltas = list(gen)
    result = gen.result
    assert isinstance(result, ReplyResult)
    assert len(deltas) > 1
    assert "".join(deltas) == result.text
    assert 0 < result.new_tokens <= 24
    assert result.prompt_tokens == tiny_engine.count_tokens(
        tiny_engine.format.render(MESSAGES)
    )
    assert result.finish_reason in ("stop", "length")
    assert result.ttft_s is not None and 0 <= result.ttft_s <= result.total_s
    assert result.params == GenerationParams(max_new_tokens=24, seed=1).to_dict()
    assert result.model["quantization"] == "none" and result.model["backend"] == "inprocess"
    assert result.dropped_turns == 0


def test_max_new_tokens_respected_and_length_reason(tiny_engine):
    # A random tiny model rarely emits <|im_end|>; 5 tokens ends on length.
    result = tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=5, seed=0))
    assert result.new_tokens <= 5
    if result.new_tokens == 5:
        assert result.finish_reason in ("length", "stop")


def test_same_seed_same_text_and_greedy_is_deterministic(tiny_engine):
    a = tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=16, seed=7))
    b = tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=16, seed=7))
    assert a.text == b.text
    g1 = tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=16, temperature=0))
    g2 = tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=16, temperature=0, seed=99))
    assert g1.text == g2.text


def test_different_seeds_differ(tiny_engine):
    texts = {
        tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=16, seed=s, temperature=1.0)).text
        for s in range(4)
    }
    assert len(texts) > 1


def test_stops_at_end_of_turn_token(tiny_loaded):
    # Force the end-of-turn token to be the most likely next token: the reply must stop there.
    import torch

    model = tiny_loaded.model
    eos = tiny_loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    engine = Engine(tiny_loaded)
    head = model.get_output_embeddings()
    saved = head.weight.data.clone()
    bias_hook = head.register_forward_hook(
        lambda mod, inp, out: out + torch.nn.functional.one_hot(
            torch.tensor(eos), out.shape[-1]
        ).to(out.dtype) * 1e4
    )
    try:
        result = engine.generate(MESSAGES, GenerationParams(max_new_tokens=20, temperature=0))
    finally:
        bias_hook.remove()
        head.weight.data.copy_(saved)
    assert result.finish_reason == "stop"
    assert result.new_tokens == 1
    assert result.text == ""


def test_cancel_stops_generation(tiny_engine):
    gen = tiny_engine.start(MESSAGES, GenerationParams(max_new_tokens=400, seed=1))
    received = []
    for delta in gen:
        received.append(delta)
        if len(received) == 3:
            gen.cancel()
    assert gen.result.finish_reason == "cancelled"
    assert gen.result.new_tokens < 400


def test_concurrent_generations_are_serialised(tiny_engine):
    results = []

    def run(seed):
        results.append(tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=8, seed=seed)))

    threads = [threading.Thread(target=run, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3
    solo = tiny_engine.generate(MESSAGES, GenerationParams(max_new_tokens=8, seed=0)).text
    assert solo in [r.text for r in results]


def test_plain_format_cuts_at_the_next_speaker(tiny_loaded):
    engine = Engine(tiny_loaded, prompt_format="plain")
    gen = engine.start(MESSAGES, GenerationParams(max_new_tokens=30, seed=2))
    text = "".join(gen)
    assert "\n病人：" not in text and "\n医生：" not in text
    assert text == gen.result.text


def test_context_budget_reports_dropped_turns(tiny_loaded):
    engine = Engine(tiny_loaded, max_context_tokens=300)
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"第{i}次：我最近压力很大，工作很忙。"},
                    {"role": "assistant", "content": "听起来你很辛苦。能具体说说吗？"}]
    messages = [MESSAGES[0]] + history + [MESSAGES[1]]
    result = engine.generate(messages, GenerationParams(max_new_tokens=16, seed=0))
    assert result.dropped_turns > 0
    assert result.prompt_tokens <= 300 - 16
    assert not result.summary_used and result.first_visible == 2 * result.dropped_turns


def test_engine_passes_pinned_notes_and_summary_to_the_budget(tiny_loaded):
    engine = Engine(tiny_loaded, max_context_tokens=300)
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"第{i}次：我最近压力很大，工作很忙。"},
                    {"role": "assistant", "content": "听起来你很辛苦。能具体说说吗？"}]
    messages = [MESSAGES[0]] + history + [MESSAGES[1]]
    note, summary = "风险提示：来访者曾提到想死。", "来访者工作压力大，失眠两个月。"
    result = engine.generate(messages, GenerationParams(max_new_tokens=8, seed=0), pinned=[note], summary=summary)
    fit = engine.budget.fit(messages, 8, pinned=[note], summary=summary)
    assert result.summary_used and result.prompt_tokens == fit.prompt_tokens <= 300 - 8
    assert result.first_visible == fit.first_visible > 0 and result.dropped_turns == fit.dropped_turns
    assert note in fit.prompt and summary in fit.prompt
    assert {"first_visible", "summary_used"} <= result.metrics().keys()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1},
        {"temperature": float("nan")},
        {"top_p": 0},
        {"max_new_tokens": 0},
        {"max_new_tokens": 10**6},
        {"max_new_tokens": 2.5},
        {"repetition_penalty": "1.1"},
        {"seed": -3},
        {"temperature": True},
    ],
)
def test_bad_generation_params(kwargs):
    with pytest.raises(ValueError):
        GenerationParams(**kwargs)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_loading_generates(tiny_model_dir, quantization):
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), quantization=quantization))
    assert loaded.quantization == quantization
    import bitsandbytes as bnb

    linear_types = {type(m).__name__ for m in loaded.model.modules()}
    expected = "Linear4bit" if quantization == "4bit" else "Linear8bitLt"
    assert expected in linear_types
    assert isinstance(loaded.model.model.layers[0].mlp.up_proj, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    result = Engine(loaded).generate(MESSAGES, GenerationParams(max_new_tokens=8, seed=0))
    assert result.new_tokens > 0
    assert result.model["quantization"] == quantization


def test_quantization_config_helper():
    import torch

    q = quantization_config("4bit", "cuda")
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("4bit", "cpu").bnb_4bit_compute_dtype == torch.float32
    assert quantization_config("8bit", "cpu").load_in_8bit
    assert quantization_config("none", "cuda") is None


def test_auto_quantization_is_none_on_cpu(tiny_loaded):
    assert tiny_loaded.device == "cpu"
    assert tiny_loaded.quantization == "none"


def test_unknown_model_errors_name_it_and_suggest_demo(tmp_path):
    with pytest.raises(ModelLoadError, match="demo"):
        load_model(ModelSpec(model=str(tmp_path / "nope")))
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelSpec(model="no-such-org/no-such-model"))
    assert "no-such-org/no-such-model" in str(info.value) and "--model demo" in str(info.value)
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(ModelSpec(model=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="量化"):
        ModelSpec(model="demo", quantization="3bit")


def test_adapter_loads_and_changes_output(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(50)
    peft_model.save_pretrained(tmp_path / "adapter")
    plain = Engine(load_model(ModelSpec(model=str(tiny_model_dir), quantization="none")))
    adapted_loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(tmp_path / "adapter")))
    adapted = Engine(adapted_loaded)
    assert adapted.info["adapter"] == str(tmp_path / "adapter")
    p = GenerationParams(max_new_tokens=12, temperature=0)
    assert plain.generate(MESSAGES, p).text != adapted.generate(MESSAGES, p).text


def test_adapter_for_another_base_is_a_clear_error(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from train.demo.tiny_lm import ModelShape, build_untrained

    other = build_untrained(tmp_path / "other", shape=ModelShape(96, 128, 2, 4, 2, 512), vocab_size=2000)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(other),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="不匹配"):
        load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(tmp_path / "adapter")))
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(tmp_path / "missing")))
