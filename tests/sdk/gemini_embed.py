"""Embeddings with the official Google GenAI Python SDK through the router (run by tests/integration/gemini.rs).

Usage: gemini_embed.py ROUTER_URL GATEWAY_KEY MODEL
The mock upstream answers each input text t (at position i of its call) with the vector [i, len(t), 0.5].
Exits non-zero (with a traceback) on the first failed check.
"""
import sys

from google import genai
from google.genai import types

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base))

# Several texts in one call, with a dimensionality: one embedding each, in order.
r = client.models.embed_content(
    model=model,
    contents=["first text", "the second"],
    config=types.EmbedContentConfig(output_dimensionality=3, task_type="RETRIEVAL_DOCUMENT"),
)
assert [e.values for e in r.embeddings] == [[0.0, 10.0, 0.5], [1.0, 10.0, 0.5]], r

# One text.
r = client.models.embed_content(model=model, contents="hello")
assert [e.values for e in r.embeddings] == [[0.0, 5.0, 0.5]], r
print("ok")
