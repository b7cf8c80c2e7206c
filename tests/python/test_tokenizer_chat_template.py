"""Chat templates rendered by `loraserve tokenize --chat` must be byte-identical to
transformers' apply_chat_template(tokenize=False) for multi-turn conversations.

llama2's tokenizer_config.json has no chat_template, so both sides get the official
Llama-2-chat template from tests/data/tokenizer/llama2_chat_template.jinja."""
import pytest
from transformers import AutoTokenizer

from tokenizer_harness import NAMES, REPO, run_cli, tokenizers_dir

LLAMA2_TEMPLATE = REPO / "tests" / "data" / "tokenizer" / "llama2_chat_template.jinja"


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [m("user", "Hello!")],
    [m("system", "You are a helpful assistant."), m("user", "Hi there")],
    [m("user", "What is 2+2?"), m("assistant", "4"), m("user", "And 3+3?")],
    [m("system", "Be terse."), m("user", "  padded question \n"), m("assistant", " padded answer  "),
     m("user", "next")],
    [m("system", "Système: réponds en français 🇫🇷"), m("user", "Bonjour, ça va ?"),
     m("assistant", "Très bien, merci !"), m("user", "你好，世界")],
    [m("user", "Line one\nLine two\n\n\tindented"), m("assistant", "```python\nprint('hi')\n```")],
    [m("user", "a"), m("assistant", "b"), m("user", "c"), m("assistant", "d"), m("user", "e"),
     m("assistant", "f")],
    [m("user", "Quote \"this\" and 'that' {{ not a tag }} {% neither %}")],
    [m("user", "")],
    [m("system", ""), m("user", "empty system prompt")],
]

QWEN_EXTRA = [
    [m("user", "Think first"), m("assistant", "<think>\nreasoning here\n</think>\n\nThe answer.")],
    [m("user", "q1"), m("assistant", "<think>r1</think>a1"), m("user", "q2"),
     m("assistant", "<think>\nr2\n</think>\n\na2")],
    [m("system", "sys"), m("user", "call a tool"), m("assistant", "calling"),
     m("tool", "<tool_response>42</tool_response>"), m("tool", "second result")],
    [m("user", "q"), m("assistant", "a"), m("system", "late system message"), m("user", "q2")],
    [m("user", "<tool_response>only tool-like</tool_response>")],
]


def conversations_for(name):
    return CONVERSATIONS + (QWEN_EXTRA if name == "qwen3" else [])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_matches_transformers(name, add_generation_prompt):
    path = tokenizers_dir() / name
    reference = AutoTokenizer.from_pretrained(str(path))
    override = LLAMA2_TEMPLATE.read_text() if name == "llama2" else None
    conversations = conversations_for(name)
    expected = [reference.apply_chat_template(c, tokenize=False,
                                              add_generation_prompt=add_generation_prompt,
                                              chat_template=override)
                for c in conversations]
    args = ["--tokenizer", str(path), "--chat"]
    if add_generation_prompt:
        args.append("--add-generation-prompt")
    if override is not None:
        args += ["--chat-template", str(LLAMA2_TEMPLATE)]
    actual = run_cli(args, conversations)
    for conversation, exp, act in zip(conversations, expected, actual):
        assert act == exp, f"{name}: template output differs for {conversation!r}"
