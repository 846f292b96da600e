"""Drives the router with the official OpenAI and Anthropic Python SDKs (run by tests/integration/sdk.rs).

Usage: sdk_e2e.py ROUTER_URL GATEWAY_KEY
Exits non-zero (with a traceback) on the first failed check.
"""
import sys

import anthropic
import openai

base, key = sys.argv[1], sys.argv[2]

oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

# Chat, non-stream.
r = oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content == "hello from openai mock", r
assert r.usage.prompt_tokens == 9, r.usage

# Chat, stream, without usage: no usage chunk reaches the client, and no chunk has empty choices.
text = ""
for chunk in oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True):
    assert chunk.choices, f"usage-only chunk leaked to a client that did not ask: {chunk}"
    text += chunk.choices[0].delta.content or ""
assert text == "Hello world", text

# Chat, stream, with usage.
usage = None
for chunk in oa.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
):
    if chunk.usage:
        usage = chunk.usage
assert usage is not None and usage.prompt_tokens == 11, usage

# Embeddings and models.
e = oa.embeddings.create(model="text-embedding-3-small", input="x")
assert e.data[0].embedding == [0.5, 0.25], e
ids = [m.id for m in oa.models.list()]
assert "gpt-4o" in ids and "claude-sonnet-4-5" in ids, ids

# Responses (what Codex CLI uses), stream.
out = ""
with oa.responses.stream(model="gpt-4o", input="hi") as s:
    for ev in s:
        if ev.type == "response.output_text.delta":
            out += ev.delta
    final = s.get_final_response()
assert out == "Hi from responses", out
assert final.usage.input_tokens == 5, final.usage

# Errors come back as SDK exceptions with the router's message.
try:
    oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as err:
    assert "no-such-model" in str(err), err

bad = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
try:
    bad.models.list()
    raise AssertionError("expected AuthenticationError")
except openai.AuthenticationError:
    pass

# Anthropic SDK: x-api-key auth, non-stream, stream, count_tokens.
an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
m = an.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
assert m.content[0].text == "Hi", m
assert m.usage.cache_read_input_tokens == 100, m.usage

with an.messages.stream(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed == "Hi there", streamed
assert final.usage.output_tokens == 2, final.usage

n = an.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
assert n.input_tokens == 7, n

# Bearer auth, as Claude Code sends with ANTHROPIC_AUTH_TOKEN.
an2 = anthropic.Anthropic(base_url=base, auth_token=key, api_key=None, max_retries=0)
m = an2.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
assert m.content[0].text == "Hi"

try:
    an.messages.create(model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("expected NotFoundError")
except anthropic.NotFoundError as err:
    assert "claude-nope" in str(err), err

# Cross-protocol: the Anthropic SDK on an OpenAI-compatible channel, tools and streaming included.
m = an.messages.create(model="deepseek-chat", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
assert m.content[0].text == "hello from openai mock", m
assert m.usage.input_tokens == 9 and m.usage.output_tokens == 2, m.usage
tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
with an.messages.stream(model="deepseek-chat", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather?"}]) as s:
    final = s.get_final_message()
tool_uses = [b for b in final.content if b.type == "tool_use"]
assert tool_uses and tool_uses[0].name == "get_weather" and tool_uses[0].input == {"city": "Oslo"}, final
assert final.stop_reason == "tool_use", final

# The OpenAI SDK on a Claude channel.
r = oa.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content == "Hi", r
text = "".join(
    c.choices[0].delta.content or ""
    for c in oa.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}], stream=True)
    if c.choices
)
assert text == "Hi there", text

# Responses (Codex CLI) on a chat-only channel, with a tool call.
with oa.responses.stream(
    model="deepseek-chat", input="weather?", tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
) as s:
    for _ in s:
        pass
    final = s.get_final_response()
calls = [o for o in final.output if o.type == "function_call"]
assert calls and calls[0].name == "get_weather" and calls[0].arguments == '{"city": "Oslo"}', final.output

print("sdk e2e: all checks passed")
