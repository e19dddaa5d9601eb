"""Chat templates and what transformers renders from them, for ds's
ChatTemplate exactness test.

Test-only (the test virtual environment, with transformers and jinja2 from
PyPI). Three templates written from the published structure of the
DeepSeek-V3, Mixtral-Instruct and Qwen2.5 templates (namespaces and their
attributes, loops over messages and tool calls, loop.index0 / first /
last, subscripts, `in`, `is defined` / `is none`, split()[-1], tojson,
raise_exception, whitespace control), rendered by transformers'
apply_chat_template on generated conversations (roles, tools, tool calls,
reasoning, Unicode, quotes, newlines, add_generation_prompt). Writes
OUT.jsonl: a first line {"templates": {name: source}}, then one line per
case {"template", "context", "expected"} or {"template", "context",
"error"} (raise_exception's message).
"""

import json
import random
import sys

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

MIXTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/"
    "user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}")

DEEPSEEK_V3 = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt"
    " = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool="
    "false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + "
    "message['content'] %}{% set ns.is_first_sp = false %}{%- else %}"
    "{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content']"
    " %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}"
    "{{ ns.system_prompt }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
    "{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and 'tool_calls' in message %}"
    "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}"
    "{%- if not ns.is_first %}{%- if message['content'] is none %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + "
    "'```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + "
    "message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + "
    "'```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}"
    "{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + "
    "'<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' "
    "+ tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}"
    "{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not "
    "in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + "
    "message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false"
    " -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in"
    " content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}"
    "{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true"
    " -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜>"
    "<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}"
    "{{'<｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}"
    "{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}"
    "{% endif %}")

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Block-style whitespace (lstrip_blocks / trim_blocks, comments, loop
# variables, filters) beyond what the three use.
MISC = """{# A comment. #}
{% for m in messages %}
  {% if loop.first %}first {{ loop.length }}{% endif %}
  [{{ loop.index }}/{{ loop.revindex0 }}] {{ m.role | upper }}: {{ m.content | trim }}
  {%- if m.content | length > 20 %} (long){% endif %}
{% endfor %}
{% set roles = messages | list if false else [] %}{{ -3 | abs }} {{ 'a' ~ 2 * 3 }} {{ 1 + 1 is odd }} {{ 'a<&>"' | e }}
{{ messages | length }} {{ (messages[-1].content ~ '!')[:5] }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 1.5 * 2 }}
{{ {'a': [1, 'x', none, true]} | tojson }} {{ [1, 2] + [3] }} {{ 'abc'[::-1] }}
{{ messages[0].get('missing', 'dflt') }} {{ 'x' if messages else 'y' }}
"""

CONTENTS = ["Hello!", "What is 2+2?", "", "  spaced  \n", "Ünïcödé 你好 😀",
            "quotes ' and \" and \\\\", "line1\nline2\n\nline4",
            "<think>step by step</think>The answer is 4.",
            "a</think>b</think>c", "{\"json\": [1, 2]}", "tab\there"]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}]


def conversation(rng, kind):
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(CONTENTS)})
    for turn in range(rng.randint(1, 4)):
        msgs.append({"role": "user", "content": rng.choice(CONTENTS)})
        if kind == "tools" and rng.random() < 0.5:
            args = {"city": rng.choice(["Paris", "東京", "São Paulo"])}
            msgs.append({"role": "assistant",
                         "content": rng.choice([None, "Let me check."]),
                         "tool_calls": [{"type": "function", "function": {
                             "name": "get_weather",
                             "arguments": json.dumps(args, ensure_ascii=False)}}
                             for _ in range(rng.randint(1, 2))]})
            for _ in range(rng.randint(1, 2)):
                msgs.append({"role": "tool", "content": rng.choice(
                    ["22C, sunny", "{\"t\": 22}", "rain"])})
        if rng.random() < 0.7 or turn == 0:
            msgs.append({"role": "assistant", "content": rng.choice(CONTENTS)})
    if rng.random() < 0.15:
        rng.shuffle(msgs)  # some orders a template refuses
    return msgs


def main():
    out, count = sys.argv[1], int(sys.argv[2])
    rng = random.Random(99)
    vocab = {c: i for i, c in enumerate(["<unk>", "<s>", "</s>", "a"])}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[])),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    templates = {"mixtral": MIXTRAL, "deepseek_v3": DEEPSEEK_V3,
                 "qwen25": QWEN25, "misc": MISC}
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"templates": templates}, ensure_ascii=False) + "\n")
        for i in range(count):
            name = list(templates)[i % len(templates)]
            msgs = conversation(rng, "tools" if name in ("deepseek_v3", "qwen25")
                                else "plain")
            if name == "deepseek_v3":
                for m in msgs:  # DeepSeek's template concatenates content
                    if m["content"] is None and "tool_calls" not in m:
                        m["content"] = ""
            tools = TOOLS if name == "qwen25" and rng.random() < 0.5 else None
            gen = rng.random() < 0.5
            # As transformers hands them to the template: keys whose value
            # is None dropped from each message.
            seen = [{k: v for k, v in m.items() if v is not None} for m in msgs]
            context = {"messages": seen, "tools": tools,
                       "add_generation_prompt": gen, "bos_token": "<s>",
                       "eos_token": "</s>", "unk_token": "<unk>"}
            case = {"template": name, "context": context}
            try:
                case["expected"] = tok.apply_chat_template(
                    msgs, tools=tools, add_generation_prompt=gen,
                    tokenize=False, chat_template=templates[name])
            except Exception as e:  # raise_exception, or a template error
                case["error"] = str(e)
                # raise_exception's message must come out the same; other
                # failures (an undefined value added to a string) only fail.
                case["error_exact"] = type(e).__name__ == "TemplateError"
            f.write(json.dumps(case, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
