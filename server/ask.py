"""`llava-o1 ask`: one question about one image, without a server; stages print as they are decided."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from models.engine_config import add_engine_arguments, make_parser
    from server.search_flags import add_search_arguments

    parser = make_parser(
        "llava-o1 ask", "Answer one question about an image with stage-level search.", verbose_flag=True
    )
    ask = parser.add_argument_group("question")
    ask.add_argument("--image", required=True, help="path of the image file")
    ask.add_argument("--question", required=True, help="the question about the image")
    ask.add_argument("--json", action="store_true", help="print the result and trace as one JSON object")
    add_search_arguments(parser)
    add_engine_arguments(parser)
    return parser


def ask(argv: Sequence[str]) -> int:
    from models.engine_config import parse_engine_command

    # stdout carries the answer (or the JSON); logs go to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = parse_engine_command(build_parser, argv)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        print(f"llava-o1 ask: cannot read image {args.image}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_ask(args, image))


async def _ask(args: argparse.Namespace, image) -> int:
    from models.engine import ChatMessage, ChatPart
    from models.engine_factory import start_engine
    from server.default_model import use_default_model
    from server.search_flags import search_config_from
    from stage_search.events import StageDecided
    from stage_search.search import run_search

    use_default_model(args)  # first: the search's swires cutoff may be the default verifier's
    config = search_config_from(args)
    engine = start_engine(args)

    def show(event) -> None:
        if isinstance(event, StageDecided) and not args.json:
            print(f"<{event.stage}> {event.text.strip()}", flush=True)

    try:
        messages = [ChatMessage("user", (ChatPart.of_image(image), ChatPart.of_text(args.question)))]
        result = await run_search(engine, messages, config, on_event=show)
    finally:
        await engine.shutdown()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        u = result.usage
        print(
            f"\nanswer: {result.answer.strip()}\n({result.strategy}, beam width {result.beam_width}: "
            f"{u.prompt_tokens} prompt, {u.completion_tokens} completion, {u.judge_tokens} judge tokens, "
            f"{result.seconds:.2f} s)"
        )
    return 0
