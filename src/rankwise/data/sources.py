"""Text sources → lists of documents, split deterministically into ``calib`` and ``eval`` halves."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rankwise.errors import RankwiseError
from rankwise.io.assets import EXLLAMA_PACKAGE

SPLITS = ("calib", "eval", "all")
_CAL_DIR = "conversion/standard_cal_data"


def _wiki_documents(text: str) -> list[str]:
    """Wikipedia dump format: ``<doc ...>`` line, title line, body, ``</doc>``; keep only bodies."""
    docs = []
    for chunk in re.split(r"^<doc [^\n]*>\n", text, flags=re.MULTILINE):
        body = chunk.split("</doc>", 1)[0]
        lines = body.split("\n", 1)  # first line is the title
        if len(lines) == 2 and lines[1].strip():
            docs.append(lines[1].strip())
    return docs


def _line_documents(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _paragraph_documents(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


@dataclass(frozen=True)
class BundledCorpus:
    """A corpus file inside the exllamav2 asset package and how it divides into documents."""

    file: str
    parse: Callable[[str], list[str]]
    description: str


BUNDLED_CORPORA: dict[str, BundledCorpus] = {
    "wiki": BundledCorpus("wiki.utf8", _wiki_documents, "English Wikipedia articles (~440k tokens)"),
    "c4": BundledCorpus("c4.utf8", _line_documents, "C4 web text, one document per line"),
    "tinystories": BundledCorpus("tiny.utf8", _paragraph_documents, "TinyStories, one story per paragraph"),
    "code": BundledCorpus("code.utf8", _paragraph_documents, "source code in several languages"),
}


def _split(docs: list[str], split: str) -> list[str]:
    """First half of the documents is ``calib``, second half ``eval``: no document is in both.

    Corpora repeat some documents (the bundled wiki has duplicates); only the first copy is kept
    so that a repeated text cannot land in both halves.
    """
    if split not in SPLITS:
        raise RankwiseError(f"unknown split '{split}'; use one of: {', '.join(SPLITS)}")
    docs = list(dict.fromkeys(docs))
    half = len(docs) // 2
    if split == "calib":
        return docs[:half]
    if split == "eval":
        return docs[half:]
    return docs


def _read_jsonl(path: Path) -> list[str]:
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RankwiseError(f"{path}:{number} is not valid JSON ({exc.msg}); each line must be an object "
                                "with a \"text\" field") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise RankwiseError(f"{path}:{number} has no string \"text\" field; each line must be "
                                "{\"text\": \"...\"}")
        docs.append(record["text"])
    return docs


def _hf_documents(spec: str) -> list[str]:
    from rankwise.io.hub import hub_reachable

    parts = spec[len("hf:"):].split(":")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else "train")
    if not hub_reachable():
        raise RankwiseError(f"data source '{spec}' needs the Hugging Face Hub, which is unreachable (offline); "
                            f"use a bundled corpus ({', '.join(BUNDLED_CORPORA)}) or a local .txt/.jsonl file")
    try:
        import datasets
    except ImportError as exc:
        raise RankwiseError("data source 'hf:...' needs the datasets package; run: pip install datasets") from exc
    dataset = datasets.load_dataset(name, config, split=split)
    return [str(t) for t in dataset["text"] if str(t).strip()]


def documents(source: str, split: str = "all") -> list[str]:
    """The documents of ``source`` in ``split`` ("calib", "eval" or "all").

    ``source``: a bundled corpus (wiki, c4, tinystories, code), a ``.txt`` file (documents are
    paragraphs), a ``.jsonl`` file with a ``text`` field, or ``hf:NAME[:CONFIG][:SPLIT]`` online.
    """
    if source in BUNDLED_CORPORA:
        corpus = BUNDLED_CORPORA[source]
        text = EXLLAMA_PACKAGE.file(f"{_CAL_DIR}/{corpus.file}").read_text(encoding="utf-8")
        return _split(corpus.parse(text), split)
    if source.startswith("hf:"):
        return _split(_hf_documents(source), split)
    path = Path(source).expanduser()
    if path.suffix in (".txt", ".jsonl"):
        if not path.is_file():
            raise RankwiseError(f"data file {path} does not exist; pass an existing .txt/.jsonl file or a bundled "
                                f"corpus ({', '.join(BUNDLED_CORPORA)})")
        try:
            docs = _read_jsonl(path) if path.suffix == ".jsonl" else _paragraph_documents(path.read_text("utf-8"))
        except UnicodeDecodeError:
            raise RankwiseError(f"data file {path} is not UTF-8 text; convert it to UTF-8 (or pass another "
                                "file)") from None
        if not docs:
            raise RankwiseError(f"data file {path} holds no text; give it some paragraphs (a .txt file) or "
                                "{\"text\": ...} lines (a .jsonl file)")
        return _split(docs, split)
    raise RankwiseError(f"unknown data source '{source}'; use one of {', '.join(BUNDLED_CORPORA)}, "
                        "a .txt or .jsonl file, or hf:NAME[:CONFIG][:SPLIT]")
