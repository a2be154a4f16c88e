"""The four reasoning stages, their tags, and parsing/closing of tagged text."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_STAGE_NAMES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
# Between two tagged stages of an answer, as stage-trained models write it.
STAGE_SEPARATOR = "\n\n"

# What the judge looks for in each stage (our paraphrase of the paper's criteria), by position.
STAGE_CRITERIA = (
    "it outlines how the question will be approached, without already doing the analysis or the math",
    "it describes the image details that matter for the question thoroughly and accurately, without general commentary",
    "its logic and calculations are correct and follow from the description of the image",
    "it states the final answer directly, consistent with the reasoning, and does not refuse to answer",
)


@dataclass(frozen=True)
class Stage:
    """One stage: its tag name (e.g. SUMMARY), position and what makes a good one."""

    name: str
    index: int
    criteria: str

    @property
    def open_tag(self) -> str:
        return f"<{self.name}>"

    @property
    def close_tag(self) -> str:
        return f"</{self.name}>"

    @property
    def is_final(self) -> bool:
        """The stage that states the answer (CONCLUSION)."""
        return self.index == len(STAGE_CRITERIA) - 1

    def tagged(self, body: str) -> str:
        """The stage as it stands in an answer, followed by the separator before the next one."""
        return f"{self.open_tag}{body}{self.close_tag}{STAGE_SEPARATOR}"


@dataclass(frozen=True)
class StageSet:
    """The ordered stages of an answer; tag names are configurable for models trained on others."""

    stages: tuple[Stage, ...]

    @classmethod
    def from_names(cls, names: tuple[str, ...] | list[str] = DEFAULT_STAGE_NAMES) -> StageSet:
        if len(names) != len(STAGE_CRITERIA):
            raise ValueError(f"expected {len(STAGE_CRITERIA)} stage names, got {len(names)}")
        if len({n.upper() for n in names}) != len(names) or not all(re.fullmatch(r"[A-Za-z_]+", n) for n in names):
            raise ValueError(f"stage names must be distinct words: {names!r}")
        return cls(tuple(Stage(n, i, c) for i, (n, c) in enumerate(zip(names, STAGE_CRITERIA, strict=True))))

    def __iter__(self):
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def last(self) -> Stage:
        return self.stages[-1]

    @property
    def all_tags(self) -> tuple[str, ...]:
        return tuple(t for s in self.stages for t in (s.open_tag, s.close_tag))

    def clean_content(self, text: str) -> str:
        """A stage body with no tags in it: cut at the first tag the model wrote (the search closes it)."""
        cut = min((i for i in (text.find(t) for t in self.all_tags) if i >= 0), default=len(text))
        return text[:cut]

    def settled_length(self, text: str) -> int:
        """How much of a stage body being streamed is final: the text before any tag, less a tail
        that could still grow into a tag (so streamed text is never taken back)."""
        head = self.clean_content(text)
        longest = max(len(t) for t in self.all_tags) - 1
        for k in range(min(len(head), longest), 0, -1):
            if any(tag.startswith(head[-k:]) for tag in self.all_tags):
                return len(head) - k
        return len(head)

    def render(self, contents: dict[str, str]) -> str:
        """Tagged text of the stages present in `contents` (by stage name), in stage order."""
        tagged = "".join(s.tagged(contents[s.name]) for s in self.stages if s.name in contents)
        return tagged.removesuffix(STAGE_SEPARATOR)

    def parse(self, text: str) -> dict[str, str]:
        """Stage name -> body, from text a model wrote whole (best-of-N, single samples).

        A stage whose closing tag is missing runs to the next tag or the end. Text with no tag at
        all is taken as the conclusion (a model not trained on the format answered directly).
        Stages the text lacks are empty, so the result always has every stage, in order.
        """
        contents = {s.name: "" for s in self.stages}
        found = False
        for stage in self.stages:
            start = text.find(stage.open_tag)
            if start < 0:
                continue
            found = True
            contents[stage.name] = self.clean_content(text[start + len(stage.open_tag) :])
        if not found:
            contents[self.last.name] = self.clean_content(text)
        return contents
