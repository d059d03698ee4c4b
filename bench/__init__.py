"""Benchmarks for the chatbot gateway: overhead against a direct call, streaming relay,
memory per conversation, cold start, an optional LiteLLM comparison, and a load test.

Every measurement runs three separate processes (a fake upstream, the server under
test and a load generator), so the server is the only thing being measured. See
``bench/README.md`` for what each scenario measures and how to run it.
"""
