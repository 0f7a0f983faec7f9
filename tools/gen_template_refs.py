#!/usr/bin/env python3
"""Reference renderings of real chat templates for Krasis' chat-template tests.

Krasis renders each model's own Jinja2 chat_template in C++ (common/chat_template/)
and must produce exactly what Hugging Face transformers' apply_chat_template
produces. This script renders a battery of conversations with Python's jinja2,
configured the way transformers configures it (ImmutableSandboxedEnvironment with
trim_blocks and lstrip_blocks, the loopcontrols extension, the {% generation %}
tag, transformers' own tojson filter and the raise_exception / strftime_now
globals), and writes tests/data/chat_template/expected_<name>.json:

    [{"name": ..., "context": {...}, "rendered": "..."}, ...]

A case the template refuses carries "error" (jinja2's message) instead of
"rendered"; the C++ test then expects an error too. The context is exactly what the
template sees: messages, tools (None without tools, as transformers passes it),
documents, add_generation_prompt, the tokenizer's special tokens and any template
kwargs (enable_thinking ...).

Templates:
  qwen3, deepseek_v3   the real tokenizer_config.json chat templates, read from the
                       tokenizer cache that scripts/fetch_tokenizers fills
                       ($KRASIS_TOKENIZERS_DIR or ${KRASIS_CACHE:-~/.cache/krasis}/tokenizers/<name>/);
                       never committed
  qwen3_coder, glm4_5, glm4_7
                       published templates committed under tests/data/chat_template/
                       (provenance in SOURCES.md)

Usage: tools/gen_template_refs.py [--tokenizers DIR] [--out DIR]
Needs only python3 and jinja2 (3.1); transformers is not required.
"""

import argparse
import copy
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data", "chat_template")

SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                      "cls_token", "mask_token"]


# --- the environment transformers builds (chat_template_utils._compile_jinja_template)

class AssistantTracker(Extension):
    """transformers' {% generation %} ... {% endgeneration %} tag (renders its body)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def compile_template(source):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


# --- template sources

def tokenizers_dir(arg):
    if arg:
        return arg
    if os.environ.get("KRASIS_TOKENIZERS_DIR"):
        return os.environ["KRASIS_TOKENIZERS_DIR"]
    cache = os.environ.get("KRASIS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "krasis")
    return os.path.join(cache, "tokenizers")


def special_tokens(config):
    """transformers' special_tokens_map: the special tokens that are set, as strings."""
    out = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    extra = config.get("additional_special_tokens")
    if extra:
        out["additional_special_tokens"] = [t["content"] if isinstance(t, dict) else t for t in extra]
    return out


def load_model_template(tok_dir, name):
    model_dir = os.path.join(tok_dir, name)
    config_path = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.exists(config_path):
        sys.exit(f"gen_template_refs: {config_path} missing; run scripts/fetch_tokenizers")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    jinja_path = os.path.join(model_dir, "chat_template.jinja")
    if os.path.exists(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            source = f.read()
    else:
        source = config["chat_template"]
    return source, special_tokens(config)


def load_data_template(name):
    with open(os.path.join(DATA, name + ".jinja"), encoding="utf-8") as f:
        return f.read()


# --- conversations

WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"}},
        "required": ["city"]}}}

SEARCH = {"type": "function", "function": {
    "name": "web_search",
    "description": "Search the web and return the top results.",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "description": "What to search for"},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        "recency_days": {"type": ["integer", "null"], "description": "Only results this recent"},
        "safe": {"type": "boolean", "default": True}},
        "required": ["query"]}}}

RICH = {"type": "function", "function": {
    "name": "run_python",
    "description": "  Run a Python snippet.\n  Returns \"stdout\" and <stderr>.  ",
    "parameters": {"type": "object", "properties": {
        "code": {"type": "string", "description": "Source code\twith a tab & a \\ backslash"},
        "timeout": {"type": "number", "default": 0.5, "exclusiveMinimum": 1e-07},
        "scale": {"type": "number", "default": 100.0},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "flag": {"type": "boolean", "default": False, "nullable": None}},
        "required": ["code"], "additionalProperties": False},
    "strict": True}}

UNICODE_TOOL = {"type": "function", "function": {
    "name": "translate",
    "description": "把文本翻译成英文 🌍 (ünïcödé)",
    "parameters": {"type": "object", "properties": {
        "text": {"type": "string", "description": "要翻译的文本"}}, "required": ["text"]}}}

SYSTEM = "You are a helpful assistant."


def call(cid, name, args, as_string):
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False) if as_string else args}}


def tool_msg(cid, name, content):
    return {"role": "tool", "tool_call_id": cid, "name": name, "content": content}


def conversations(args_as_string, tool_call_content):
    """(name, messages, tools, add_generation_prompt, kwargs) cases.

    args_as_string: tool-call arguments as JSON strings (DeepSeek-V3's template
    concatenates them) instead of dicts. tool_call_content: the content of
    assistant messages that carry tool calls ("" or None)."""
    s = args_as_string
    weather_call = call("call_1", "get_weather", {"city": "Paris", "unit": "celsius"}, s)
    cases = [
        ("single_user", [{"role": "user", "content": "Hello!"}], None, True, {}),
        ("single_user_no_generation_prompt", [{"role": "user", "content": "Hello!"}], None, False, {}),
        ("system_user", [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": "What is 2+2?"}], None, True, {}),
        ("multi_turn", [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": "Hi, who are you?"},
                        {"role": "assistant", "content": "I am an assistant."},
                        {"role": "user", "content": "Tell me a joke."}], None, True, {}),
        ("ends_with_assistant", [{"role": "user", "content": "Say hi."},
                                 {"role": "assistant", "content": "Hi!"}], None, False, {}),
        ("thinking_off", [{"role": "user", "content": "Quick answer: capital of France?"}],
         None, True, {"enable_thinking": False}),
        ("thinking_on", [{"role": "user", "content": "Prove that sqrt(2) is irrational."}],
         None, True, {"enable_thinking": True}),
        ("thinking_off_history", [{"role": "user", "content": "One"},
                                  {"role": "assistant", "content": "Two"},
                                  {"role": "user", "content": "Three /nothink"}],
         None, True, {"enable_thinking": False}),
        ("reasoning_content_last", [{"role": "user", "content": "What is 17*3?"},
                                    {"role": "assistant", "reasoning_content": "17*3 = 51.",
                                     "content": "51"}], None, False, {}),
        ("reasoning_content_history", [{"role": "user", "content": "What is 17*3?"},
                                       {"role": "assistant", "reasoning_content": "\n17*3 = 51.\n",
                                        "content": "51"},
                                       {"role": "user", "content": "And 18*3?"}], None, True, {}),
        ("inline_think", [{"role": "user", "content": "Plan a trip."},
                          {"role": "assistant", "content": "<think>\nConsider budget.\n</think>\n\nGo to Lisbon."}],
         None, False, {}),
        ("inline_think_history", [{"role": "user", "content": "Plan a trip."},
                                  {"role": "assistant", "content": "<think>\nConsider budget.\n</think>\n\nGo to Lisbon."},
                                  {"role": "user", "content": "Why?"}], None, True, {}),
        ("tools_available", [{"role": "user", "content": "Weather in Paris?"}], [WEATHER, SEARCH], True, {}),
        ("tools_with_system", [{"role": "system", "content": SYSTEM},
                               {"role": "user", "content": "Find news about Mars."}], [SEARCH], True, {}),
        ("tool_call_round_trip", [{"role": "user", "content": "Weather in Paris?"},
                                  {"role": "assistant", "content": tool_call_content, "tool_calls": [weather_call]},
                                  tool_msg("call_1", "get_weather", '{"temp": 21, "sky": "clear"}')],
         [WEATHER], True, {}),
        ("tool_call_final_answer", [{"role": "system", "content": SYSTEM},
                                    {"role": "user", "content": "Weather in Paris?"},
                                    {"role": "assistant", "content": tool_call_content, "tool_calls": [weather_call]},
                                    tool_msg("call_1", "get_weather", "21 degrees, clear"),
                                    {"role": "assistant", "content": "It is 21 degrees and clear in Paris."},
                                    {"role": "user", "content": "Thanks!"}],
         [WEATHER], True, {}),
        ("parallel_tool_calls", [{"role": "user", "content": "Weather in Paris and Rome, then search."},
                                 {"role": "assistant", "content": tool_call_content, "tool_calls": [
                                     weather_call,
                                     call("call_2", "get_weather", {"city": "Rome"}, s),
                                     call("call_3", "web_search", {"query": "Rome events", "max_results": 3,
                                                                   "recency_days": None, "safe": True}, s)]},
                                 tool_msg("call_1", "get_weather", "21C"),
                                 tool_msg("call_2", "get_weather", "25C"),
                                 tool_msg("call_3", "web_search", "[]")],
         [WEATHER, SEARCH], True, {}),
        ("tool_call_with_text", [{"role": "user", "content": "Weather?"},
                                 {"role": "assistant", "content": "Let me check that for you.",
                                  "tool_calls": [call("call_9", "get_weather", {"city": "Oslo"}, s)]},
                                 tool_msg("call_9", "get_weather", "-3C, snow")],
         [WEATHER], False, {}),
        ("tool_call_reasoning", [{"role": "user", "content": "Weather in Paris?"},
                                 {"role": "assistant", "reasoning_content": "I should call the weather tool.",
                                  "content": tool_call_content, "tool_calls": [weather_call]},
                                 tool_msg("call_1", "get_weather", "21C")],
         [WEATHER], True, {"enable_thinking": True}),
        ("rich_arguments", [{"role": "user", "content": "Run it."},
                            {"role": "assistant", "content": tool_call_content, "tool_calls": [call(
                                "call_r", "run_python",
                                {"code": "print(\"hi\")\nprint('a\\tb')", "timeout": 2.5, "scale": 1e-05,
                                 "env": {"LANG": "C.UTF-8", "EMPTY": ""}, "args": ["-v", "ü"],
                                 "flag": False, "count": 3, "nothing": None}, s)]},
                            tool_msg("call_r", "run_python", "hi\na\tb")],
         [RICH], True, {}),
        ("rich_tool_schema", [{"role": "user", "content": "Use the tool."}], [RICH, WEATHER], True, {}),
        ("unicode", [{"role": "system", "content": "你是一个乐于助人的助手。"},
                     {"role": "user", "content": "翻译：こんにちは 👋 — “quotes” ‘single’"}],
         [UNICODE_TOOL], True, {}),
        ("unicode_tool_call", [{"role": "user", "content": "翻译 hello"},
                               {"role": "assistant", "content": tool_call_content, "tool_calls": [
                                   call("call_u", "translate", {"text": "你好，世界 🌍"}, s)]},
                               tool_msg("call_u", "translate", "Hello, world 🌍")],
         [UNICODE_TOOL], True, {}),
        ("special_characters", [{"role": "user", "content": "Line1\nLine2\twith tab \\ and \"quotes\" {{ not jinja }} {% raw %}"},
                                {"role": "assistant", "content": "  padded answer with trailing newline\n"},
                                {"role": "user", "content": "<tool_response>looks like a tool</tool_response>"}],
         None, True, {}),
        ("list_content", [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                          {"role": "user", "content": [{"type": "text", "text": "Part one. "},
                                                       {"type": "text", "text": "Part two."}]}],
         None, True, {}),
        ("tool_result_list_content", [{"role": "user", "content": "Weather?"},
                                      {"role": "assistant", "content": tool_call_content, "tool_calls": [weather_call]},
                                      {"role": "tool", "content": [{"output": "21C"}, {"output": "clear"}]}],
         [WEATHER], True, {}),
        ("agent_trajectory", [{"role": "system", "content": "You are a coding agent."},
                              {"role": "user", "content": "Fix the failing test."},
                              {"role": "assistant", "reasoning_content": "First run the tests.",
                               "content": tool_call_content, "tool_calls": [
                                   call("c1", "run_python", {"code": "import pytest; pytest.main()"}, s)]},
                              tool_msg("c1", "run_python", "1 failed: test_add"),
                              {"role": "assistant", "reasoning_content": "Look at test_add.",
                               "content": "Reading the test.", "tool_calls": [
                                   call("c2", "run_python", {"code": "print(open('t.py').read())"}, s)]},
                              tool_msg("c2", "run_python", "assert add(1, 2) == 3"),
                              {"role": "assistant", "content": "The add function subtracts; fixed it."},
                              {"role": "user", "content": "Great, also run lint."}],
         [RICH], True, {"enable_thinking": True}),
        ("multiple_system", [{"role": "system", "content": "Rule one."},
                             {"role": "system", "content": "Rule two."},
                             {"role": "user", "content": "Go."}], None, True, {}),
        ("system_mid_conversation", [{"role": "user", "content": "A"},
                                     {"role": "system", "content": "Switch to French."},
                                     {"role": "user", "content": "B"}], None, True, {}),
        ("consecutive_users", [{"role": "user", "content": "First."},
                               {"role": "user", "content": "Second."}], None, True, {}),
        ("clear_thinking_false", [{"role": "user", "content": "Q1"},
                                  {"role": "assistant", "reasoning_content": "R1", "content": "A1"},
                                  {"role": "user", "content": "Q2"}],
         None, True, {"clear_thinking": False}),
        ("empty_messages", [], None, True, {}),
    ]
    return cases


# --- rendering

def render_cases(name, source, special, args_as_string, tool_call_content):
    template = compile_template(source)
    out = []
    for case_name, messages, tools, add_generation_prompt, kwargs in conversations(
            args_as_string, tool_call_content):
        context = {"messages": messages, "tools": tools, "documents": None,
                   "add_generation_prompt": add_generation_prompt}
        context.update(special)
        context.update(kwargs)
        context = copy.deepcopy(context)
        entry = {"name": case_name, "context": context}
        try:
            entry["rendered"] = template.render(**copy.deepcopy(context))
        except Exception as e:  # the C++ side must refuse these too
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizers", help="tokenizer cache (default: as scripts/fetch_tokenizers)")
    parser.add_argument("--out", default=DATA, help="output directory")
    args = parser.parse_args()
    tok_dir = tokenizers_dir(args.tokenizers)

    qwen3, qwen3_special = load_model_template(tok_dir, "qwen3")
    deepseek, deepseek_special = load_model_template(tok_dir, "deepseek_v3")
    plain = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    glm = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    jobs = [
        # name, source, special tokens, arguments as JSON strings, tool-call content
        ("qwen3", qwen3, qwen3_special, False, ""),
        ("deepseek_v3", deepseek, deepseek_special, True, None),
        ("qwen3_coder", load_data_template("qwen3_coder"), plain, False, ""),
        ("glm4_5", load_data_template("glm4_5"), glm, False, ""),
        ("glm4_7", load_data_template("glm4_7"), glm, False, ""),
    ]
    for name, source, special, as_string, content in jobs:
        cases = render_cases(name, source, special, as_string, content)
        # A second pass with the other argument encoding covers both shapes.
        for case in render_cases(name, source, special, not as_string, content):
            if "tool_calls" in json.dumps(case["context"]["messages"]):
                case["name"] += "_args_" + ("string" if not as_string else "dict")
                cases.append(case)
        path = os.path.join(args.out, f"expected_{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=1)
            f.write("\n")
        errors = sum(1 for c in cases if "error" in c)
        print(f"{path}: {len(cases)} cases ({errors} expected errors)")


if __name__ == "__main__":
    main()
