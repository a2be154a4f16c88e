"""The contract's error for input vLLM refused, from its message and the parameter it names: the same
mapping whether vLLM runs in process (its exception) or behind its OpenAI API (the error body)."""

from __future__ import annotations

from models.engine import InvalidRequestError, PromptTooLongError

# vLLM's names for a prompt over the context: its renderer checks characters, then tokens; its
# input processor words the same check differently.
_PROMPT_LENGTH_PARAMS = {"input_text", "input_tokens", "prompt_token_ids"}
_PROMPT_LENGTH_WORDS = ("maximum context length", "maximum model length")
_STRUCTURED_OUTPUT_WORDS = ("json schema", "grammar", "structured output")


def vllm_refusal(message: str, param: str | None) -> InvalidRequestError:
    if param in _PROMPT_LENGTH_PARAMS or any(words in message for words in _PROMPT_LENGTH_WORDS):
        return PromptTooLongError(message)
    if param is None and any(words in message.lower() for words in _STRUCTURED_OUTPUT_WORDS):
        param = "json_schema"  # vLLM's structured-output checks name no parameter
    return InvalidRequestError(message, param=param)
