"""Records in the LLaVA conversation format (LLaVA-o1-100k): reading them, turning a record's
question into the search's chat messages, and chat messages back into a record's turns.

A turn is {"from": "human" | "gpt", "value": text}; "<image>" in a human turn marks where the
record's image goes (its first turn, in the records we write). Image paths are relative to the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from models.engine import ChatMessage, ChatPart

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_MARK = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
FROM = {role: name for name, role in ROLES.items()}


def read_questions(path: str | Path) -> list[dict]:
    """The records of a .jsonl file, each with `_image_path` (absolute or None) and `_question`."""
    path = Path(path)
    return [with_question(json.loads(line), path.parent) for line in path.read_text().splitlines() if line.strip()]


def with_question(record: dict, folder: Path) -> dict:
    """The record, with its image's path (`image` is relative to `folder`) and its first question's
    text added; a record without a human turn raises StopIteration."""
    record["_image_path"] = str(folder / record["image"]) if record.get("image") else None
    human = next(t["value"] for t in record["conversations"] if t["from"] == "human")
    record["_question"] = human.replace(IMAGE_MARK, "").strip()
    return record


def image_data_url(path: str) -> str:
    """An image file as a data URL, as the chat API takes images inline."""
    import base64
    import mimetypes

    mime = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def open_image(record: dict) -> Image | None:
    from PIL import Image as PILImage

    if not record.get("_image_path"):
        return None
    with PILImage.open(record["_image_path"]) as opened:
        return opened.convert("RGB")


def question_messages(record: dict, image: Image | None = None) -> list[ChatMessage]:
    """The user turn the search gets for a record: its image (if any), then its question."""
    image = image if image is not None else open_image(record)
    parts = ([ChatPart.of_image(image)] if image is not None else []) + [ChatPart.of_text(record["_question"])]
    return [ChatMessage("user", tuple(parts))]


def to_turns(messages: Sequence[ChatMessage]) -> list[dict]:
    """Chat messages as a record's turns: an image part becomes "<image>\\n" before the text."""
    turns = []
    for message in messages:
        images = 0 if isinstance(message.content, str) else sum(1 for p in message.content if p.type == "image")
        value = f"{IMAGE_MARK}\n" * images + message.text
        turns.append({"from": FROM[message.role], "value": value})
    return turns
