"""pydantic JSON Schema -> Kubernetes structural openAPIV3Schema.

Structural means: every node has a type (or says int-or-string / preserve-unknown-fields),
no $ref, no nullable unions, descriptions inline, so that `kubectl explain` and pruning work.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

# Keys copied as they are: value validations and Kubernetes extensions.
_PASSTHROUGH = {
    "description",
    "type",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "enum",
    "default",
}


class SchemaError(ValueError):
    """A pydantic construct with no structural equivalent."""


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural openAPIV3Schema of a pydantic model (camelCase names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Schema] = raw.pop("$defs", {})
    return _convert(raw, defs, path=model.__name__)


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline a $ref; keys next to the $ref (description, default) win."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = dict(defs[ref.rsplit("/", 1)[-1]])
    target.update({k: v for k, v in node.items() if k != "$ref"})
    return target


def _is_null(node: Schema) -> bool:
    return node.get("type") == "null"


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs)
    if "anyOf" in node:
        return _convert_union(node, defs, path)
    if "allOf" in node:
        if len(node["allOf"]) != 1:
            raise SchemaError(f"{path}: allOf with several members is not supported")
        merged = _resolve(node["allOf"][0], defs) | {k: v for k, v in node.items() if k != "allOf"}
        return _convert(merged, defs, path)

    out: Schema = {}
    for key, value in node.items():
        if key in _PASSTHROUGH or key.startswith("x-kubernetes-"):
            out[key] = value
    if "const" in node:
        out["enum"] = [node["const"]]
        out.setdefault("type", "string")
    if "exclusiveMinimum" in node:
        out["minimum"] = node["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node:
        out["maximum"] = node["exclusiveMaximum"]
        out["exclusiveMaximum"] = True
    if out.get("default", 0) is None:
        del out["default"]

    kind = node.get("type")
    if kind == "object":
        _convert_object(node, out, defs, path)
    elif kind == "array":
        out["items"] = _convert(node["items"], defs, f"{path}[]")
    elif kind is None and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"{path}: no type")
    return out


def _convert_object(node: Schema, out: Schema, defs: dict[str, Schema], path: str) -> None:
    properties: dict[str, Schema] = node.get("properties", {})
    required: list[str] = node.get("required", [])
    if properties:
        converted: dict[str, Schema] = {}
        for name, prop in properties.items():
            child = _convert(prop, defs, f"{path}.{name}")
            nullable = "anyOf" in prop and any(_is_null(m) for m in prop["anyOf"])
            # A nested object with its own defaults gets `default: {}`, so that the API server
            # fills its fields in even when the user leaves the whole object out.
            if child.get("type") == "object" and name not in required and not nullable:
                child["default"] = {}
            converted[name] = child
        out["properties"] = converted
        if required:
            out["required"] = list(required)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = _convert(extra, defs, f"{path}{{}}")


def _convert_union(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    siblings = {k: v for k, v in node.items() if k != "anyOf"}
    members = [_resolve(m, defs) for m in node["anyOf"] if not _is_null(m)]
    if len(members) == 1:
        merged = dict(members[0])
        merged.update(siblings)
        return _convert(merged, defs, path)

    types = sorted({m.get("type", "string" if "const" in m else None) or "" for m in members})
    out: Schema = {k: v for k, v in siblings.items() if k in _PASSTHROUGH or k.startswith("x-")}
    if out.get("default", 0) is None:
        del out["default"]
    if types == ["integer", "string"]:
        # int-or-string, written the way controller-gen writes resource.Quantity. Value
        # validations sit on the node itself: pattern applies to strings, ranges to integers.
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out["x-kubernetes-int-or-string"] = True
        for member in members:
            if member.get("type") == "integer":
                out.update({k: member[k] for k in ("minimum", "maximum") if k in member})
            else:
                out["pattern"] = _string_pattern(member, path)
        return dict(sorted(out.items(), key=lambda kv: kv[0] == "anyOf"))
    if types == ["number", "string"]:
        # No structural number-or-string type exists; accept any scalar and let the CEL rule
        # on the field (required here) say what is allowed.
        if "x-kubernetes-validations" not in out:
            raise SchemaError(f"{path}: number-or-string needs a CEL rule in json_schema_extra")
        out["x-kubernetes-preserve-unknown-fields"] = True
        return out
    raise SchemaError(f"{path}: union of {types} has no structural form")


def _string_pattern(member: Schema, path: str) -> str:
    if "pattern" in member:
        return str(member["pattern"])
    values = [member["const"]] if "const" in member else member.get("enum")
    if not values:
        raise SchemaError(f"{path}: the string side of an int-or-string needs a pattern or enum")
    alternatives = "|".join(str(v) for v in values)
    return f"^{alternatives}$" if len(values) == 1 else f"^({alternatives})$"
