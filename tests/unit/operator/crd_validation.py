"""Validate an object against a CRD the way the API server would, as far as Python can.

Structure, types, patterns, lengths and enums: the openAPIV3Schema through jsonschema (it ignores the
x-kubernetes-* keywords). The x-kubernetes-validations CEL rules: evaluated with cel-python at every
node of the object the rule's schema node applies to, with `self` bound to that node.
"""

from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema

_CEL = celpy.Environment()


def schema_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)
    ]


def _nodes(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[dict[str, Any], Any, str]]:
    yield schema, value, path
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from _nodes(sub, value[key], f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                yield from _nodes(extra, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _nodes(schema["items"], item, f"{path}[{index}]")


def cel_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    errors = []
    for node, value, path in _nodes(schema, obj, ""):
        for rule in node.get("x-kubernetes-validations") or []:
            program = _CEL.program(_CEL.compile(rule["rule"]))
            result = program.evaluate({"self": celpy.json_to_cel(value)})
            if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                errors.append(f"{path or '<root>'}: {rule['message']}")
    return errors


def crd_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Everything the API server would reject (CEL only runs on structurally valid objects)."""
    return schema_errors(schema, obj) or cel_errors(schema, obj)


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Violations of the structural-schema rules of apiextensions.k8s.io/v1 that we can check."""
    problems = []
    if "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path or '<root>'}: no type")
    for forbidden in (
        "$ref",
        "definitions",
        "dependencies",
        "patternProperties",
        "additionalItems",
        "propertyNames",
    ):
        if forbidden in schema:
            problems.append(f"{path}: {forbidden} is not allowed")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        required = set(schema.get("items", {}).get("required", []))
        problems += [f"{path}: list-map key {k} must be required" for k in keys if k not in required]
    for key, sub in (schema.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        problems += structural_problems(schema["items"], f"{path}[]")
    return problems
