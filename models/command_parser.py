"""The commands' argument parser: vLLM's flag conventions (`--foo.bar`, `=`, config files), with a
help that lists the command's own options in full and vLLM's engine flags by group after them.

vLLM's own help lists only group names, so a command's options hid among its twenty groups.
`--help=GROUP` and `--help=all` work as in vLLM. Importing this module imports vLLM.
"""

from __future__ import annotations

import argparse
import textwrap

from vllm.utils.argparse_utils import FlexibleArgumentParser


class CommandParser(FlexibleArgumentParser):
    def __init__(self, prog: str, description: str | None = None):
        super().__init__(prog=prog, description=description, usage=f"{prog} [options] [engine options]")
        self._engine_groups_start: int | None = None  # groups from here on are vLLM's
        self._own_actions: set[argparse.Action] = set()  # vLLM puts a few flags in the default group too

    def begin_engine_flags(self) -> None:
        """What was added so far is the command's own; what follows is vLLM's."""
        self._engine_groups_start = len(self._action_groups)
        self._own_actions = set(self._actions)

    def add_own_action(self, action: argparse.Action) -> None:
        self._own_actions.add(action)

    def format_help(self) -> str:
        start = self._engine_groups_start
        if self._search_keyword is not None or start is None:
            return super().format_help()
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, [], [])
        formatter.add_text(self.description)
        for group in self._action_groups[:start]:
            actions = [a for a in group._group_actions if a in self._own_actions]
            if actions:
                formatter.start_section(group.title)
                formatter.add_text(group.description)
                formatter.add_arguments(actions)
                formatter.end_section()
        groups = ", ".join(g.title or "" for g in self._action_groups[start:] if g._group_actions)
        formatter.start_section("engine options (vLLM's flags, as `vllm serve` takes them)")
        formatter.add_text(
            textwrap.fill(
                "--model MODEL, --max-model-len N, --dtype ... and every other vLLM engine flag. `--help=GROUP` "
                f"lists one group's flags, `--help=all` all of them. Groups: {groups}.",
                width=78,
            )
        )
        formatter.end_section()
        return formatter.format_help()
