"""Drives the router with the official Google GenAI Python SDK (run by tests/integration/gemini.rs).

Usage: gemini_e2e.py ROUTER_URL GATEWAY_KEY MODEL
MODEL is served by a translated channel (chat-only or Anthropic). Exits non-zero (with a traceback) on the first
failed check.
"""
import sys

from google import genai
from google.genai import errors, types

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base))

# Text, non-stream, with a system instruction and generation config.
r = client.models.generate_content(
    model=model,
    contents="hi",
    config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.2, max_output_tokens=64),
)
assert r.text == "Sunny in Paris", r
assert r.candidates[0].finish_reason == types.FinishReason.STOP, r
assert r.usage_metadata.prompt_token_count > 0 and r.usage_metadata.total_token_count > 0, r.usage_metadata

# Text, stream (the SDK asks for alt=sse).
chunks = list(client.models.generate_content_stream(model=model, contents="hi"))
assert "".join(c.text or "" for c in chunks) == "Sunny in Paris", chunks
assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP, chunks[-1]
assert chunks[-1].usage_metadata.candidates_token_count > 0, chunks[-1]


# Function calling loop: the SDK calls the Python function and sends its result back (automatic function calling).
calls = []


def get_weather(city: str) -> str:
    """Returns the weather for a city."""
    calls.append(city)
    return "18C, sunny"


r = client.models.generate_content(
    model=model, contents="Weather in Paris?", config=types.GenerateContentConfig(tools=[get_weather])
)
assert calls == ["Paris"], calls
assert r.text == "Sunny in Paris", r
history = r.automatic_function_calling_history
assert any(p.function_call and p.function_call.name == "get_weather" for c in history for p in c.parts or []), history

# The same loop by hand, streamed: the call arrives whole in a chunk.
tool = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Weather for a city",
            parameters=types.Schema(
                type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}, required=["city"]
            ),
        )
    ]
)
cfg = types.GenerateContentConfig(tools=[tool], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
fc = None
for c in client.models.generate_content_stream(model=model, contents="Weather in Paris?", config=cfg):
    for p in (c.candidates[0].content.parts or []) if c.candidates and c.candidates[0].content else []:
        if p.function_call:
            fc = p.function_call
assert fc is not None and fc.name == "get_weather" and fc.args == {"city": "Paris"}, fc
contents = [
    types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris?")]),
    types.Content(role="model", parts=[types.Part(function_call=fc)]),
    types.Content(
        role="user",
        parts=[types.Part(function_response=types.FunctionResponse(id=fc.id, name=fc.name, response={"output": "18C"}))],
    ),
]
r = client.models.generate_content(model=model, contents=contents, config=cfg)
assert r.text == "Sunny in Paris", r

# Token count and the model list.
n = client.models.count_tokens(model=model, contents="hello there")
assert n.total_tokens > 0, n
names = [m.name for m in client.models.list()]
assert f"models/{model}" in names, names

# Errors come back as SDK exceptions in Google's shape.
try:
    client.models.generate_content(model="no-such-model", contents="hi")
    raise AssertionError("expected a ClientError")
except errors.ClientError as err:
    assert err.code == 404 and err.status == "NOT_FOUND", err
try:
    client.models.generate_content(
        model=model, contents="hi", config=types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())])
    )
    raise AssertionError("expected a ClientError")
except errors.ClientError as err:
    assert err.code == 400 and "googleSearch" in str(err), err
bad = genai.Client(api_key="wrong", http_options=types.HttpOptions(base_url=base))
try:
    bad.models.generate_content(model=model, contents="hi")
    raise AssertionError("expected a ClientError")
except errors.ClientError as err:
    assert err.code == 401, err

print("ok")
