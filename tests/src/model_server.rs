//! A scripted OpenAI-compatible model server on loopback (stands in for the LLM only).
