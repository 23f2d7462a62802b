"""Loading checklist templates shipped as YAML, and the structural checks every template must pass."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import msgspec

from schemas.checklists import Item, MultiChoice, Photo, Repeat, SingleChoice, Template

SHIPPED = "server.data"


class TemplateError(ValueError):
    """A template that cannot be used; the message lists every problem."""


def walk(items: list[Item], prefix: str = "") -> Iterator[tuple[str, Item]]:
    """Every item with its path: `neighbours.who_lives_here` for a child of the `neighbours` group."""
    for item in items:
        path = f"{prefix}{item.code}"
        yield path, item
        if isinstance(item, Repeat):
            yield from walk(item.items, path + ".")


def all_items(template: Template) -> Iterator[tuple[str, Item]]:
    for section in template.sections:
        yield from walk(section.items)


@dataclass(frozen=True, slots=True)
class Paths:
    """A template's items by path, and the paths inside a repeat group (the groups themselves too).

    Built once per published version: checking an answer then costs two lookups, not a walk of the
    whole template (a pushed visit checks twenty answers).
    """

    items: dict[str, Item]
    repeated: frozenset[str]


def paths(template: Template) -> Paths:
    items = dict(all_items(template))
    groups = [p for p, item in items.items() if isinstance(item, Repeat)]
    repeated = frozenset(p for p in items if any(p == g or p.startswith(g + ".") for g in groups))
    return Paths(items, repeated)


def problems(template: Template) -> list[str]:
    """What is wrong with a template's structure (empty when it is usable)."""
    found: list[str] = []
    paths = [path for path, _ in all_items(template)]
    found += [f"item {p!r} appears twice" for p in sorted({p for p in paths if paths.count(p) > 1})]
    known = set(paths)
    for path, item in all_items(template):
        scope = path.rsplit(".", 1)[0] + "." if "." in path else ""
        cond = item.required_if
        if cond is not None:
            given = sum(x is not None for x in (cond.equals, cond.one_of, cond.differs_from))
            if given != 1:
                found.append(f"{path}: required_if needs exactly one of equals, one_of, differs_from")
            for ref in (cond.item, cond.differs_from):
                if ref is not None and scope + ref not in known:
                    found.append(f"{path}: required_if names unknown item {ref!r}")
        if isinstance(item, SingleChoice | MultiChoice):
            values = [o.value for o in item.options]
            if not values or len(values) != len(set(values)):
                found.append(f"{path}: options must be present and distinct")
        if isinstance(item, Photo) and item.min_count < sum(v.required for v in item.views):
            found.append(f"{path}: min_count is below the number of required views")
        if isinstance(item, Repeat) and item.max_rows is not None and item.max_rows < item.min_rows:
            found.append(f"{path}: max_rows is below min_rows")
        if isinstance(item, Repeat) and "." in path:
            # An answer carries one row id; a group inside a group's row would need two. Use a top-level
            # group whose rows name their parent row (e.g. job referrals with a member_ref).
            found.append(f"{path}: repeat groups cannot be nested")
    return found


def parse(raw: bytes) -> Template:
    try:
        template = msgspec.yaml.decode(raw, type=Template)
    except msgspec.ValidationError as exc:
        raise TemplateError(str(exc)) from None
    if found := problems(template):
        raise TemplateError(f"{template.code} v{template.version}: " + "; ".join(found))
    return template


def etag(template: Template) -> str:
    """A strong validator for the template's content: clients send it back in If-None-Match."""
    return hashlib.sha256(msgspec.json.encode(template, order="sorted")).hexdigest()[:32]


@functools.cache
def shipped() -> tuple[Template, ...]:
    """Every template shipped with the package, in file-name order. Read once a process: the files are
    part of the installed package, and parsing their YAML cost 50-130 ms at every app start."""
    folder = resources.files(SHIPPED).joinpath("checklists")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return tuple(parse(f.read_bytes()) for f in files)
