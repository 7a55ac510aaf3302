"""Submit options made from the contracts: one definition of every field, its type, default and help.

Each job type's options are the fields of its spec model (``nexa.contracts.jobs``),
``--field-name`` for a field, flattened for nested settings (``--lora-r``; the train
hyperparameters without a prefix, ``--learning-rate``). Nothing is defaulted here:
an option left out is left out of the request, so the contract's default applies,
and a bad value is reported by the contract's own validation. A few short spellings
users expect (``--lr``, ``-n``) are the only thing this module adds.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Nested settings whose fields are options without a prefix.
UNPREFIXED = {"hyperparameters"}
# Extra spellings, by the field's dotted path.
SHORT_FLAGS: dict[str, list[str]] = {
    "hyperparameters.learning_rate": ["--lr"],
    "num_samples": ["-n"],
    "text_columns": ["--text-column"],
}


@dataclass(frozen=True)
class FieldOption:
    """One command-line option standing for one field of a spec (``path`` is its place in the request)."""

    path: tuple[str, ...]
    param: str
    annotation: Any  # the parameter's annotation for typer: Annotated[T | None, typer.Option(...)]

    def parameter(self) -> inspect.Parameter:
        return inspect.Parameter(
            self.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=self.annotation
        )


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type under Optional and Annotated, whether None is allowed)."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _scalar(annotation: Any) -> type | None:
    """The CLI type for a field's scalar type (str for URLs, constrained strings and literals); None otherwise."""
    if annotation is bool:
        return bool
    if annotation in (int, float):
        return annotation  # type: ignore[no-any-return]
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        return int if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else str
    if annotation is str:
        return str
    if isinstance(annotation, type) and not issubclass(annotation, BaseModel | dict | list):
        return str  # AnyHttpUrl and the like: typed by the contract, typed in as text
    return None


def _help(info: FieldInfo, annotation: Any) -> str:
    text = (info.description or "").strip()
    if typing.get_origin(annotation) is typing.Literal:
        text = f"{text} One of: {', '.join(str(a) for a in typing.get_args(annotation))}.".strip()
    default = info.get_default(call_default_factory=True)
    if not info.is_required() and default not in (None, [], {}) and not isinstance(default, BaseModel):
        text = f"{text} Default: {default}.".strip()
    return text


def contract_options(
    model: type[BaseModel], *, skip: set[str], prefix: tuple[str, ...] = ()
) -> list[FieldOption]:
    """The options for ``model``'s fields (``skip`` left out), nested settings flattened."""
    found: list[FieldOption] = []
    for name, info in model.model_fields.items():
        if not prefix and name in skip:
            continue
        path = (*prefix, name)
        base, _optional = _unwrap(info.annotation)
        flag_words = [p for p in path if p not in UNPREFIXED]
        flag = "--" + "-".join(flag_words).replace("_", "-")
        dotted = ".".join(path)
        param = "f_" + "__".join(path)
        if isinstance(base, type) and issubclass(base, BaseModel):
            nested = contract_options(base, skip=set(), prefix=path)
            required = [f for f in base.model_fields.values() if f.is_required()]
            if not required and name not in UNPREFIXED:
                # `--lora`: the nested settings at their defaults (any --lora-… option implies it too).
                option = typer.Option(flag, help=(info.description or f"Enable {name}.").strip())
                found.append(FieldOption(path + ("",), param + "__on", Annotated[bool | None, option]))
            found += nested
            continue
        flags = [flag, *SHORT_FLAGS.get(dotted, [])]
        help_text = _help(info, base)
        if typing.get_origin(base) is list:
            item, _ = _unwrap(typing.get_args(base)[0])
            item_kind = _scalar(item) or str
            if typing.get_origin(item) is typing.Literal:
                help_text = (
                    f"{help_text} Each one of: {', '.join(str(a) for a in typing.get_args(item))}.".strip()
                )
            option = typer.Option(*flags, help=f"{help_text} Repeatable.".strip())
            found.append(FieldOption(path, param, Annotated[list[item_kind] | None, option]))  # type: ignore[valid-type]
            continue
        kind = _scalar(base)
        if kind is None:
            continue  # maps and unions of models: set them through the API or the SDK
        if kind is bool:
            option = typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text)
        else:
            option = typer.Option(*flags, help=help_text)
        found.append(FieldOption(path, param, Annotated[kind | None, option]))
    return found


def assemble(options: list[FieldOption], values: dict[str, Any]) -> dict[str, Any]:
    """The request fields the given option values stand for (options left out are left out)."""
    fields: dict[str, Any] = {}
    for option in options:
        value = values.get(option.param)
        if value is None or value == []:
            continue
        if option.path[-1] == "":  # an enabling flag: the nested settings, at their defaults unless set
            if value:
                _place(fields, option.path[:-1], {}, merge=True)
            continue
        _place(fields, option.path, list(value) if isinstance(value, list | tuple) else value)
    return fields


def _place(fields: dict[str, Any], path: tuple[str, ...], value: Any, *, merge: bool = False) -> None:
    node = fields
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if merge and isinstance(node.get(path[-1]), dict):
        return
    node[path[-1]] = value


def with_signature(function: Callable[..., Any], parameters: list[inspect.Parameter]) -> Callable[..., Any]:
    """``function`` presented to typer with ``parameters`` (built at import, from the contracts)."""
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return function
