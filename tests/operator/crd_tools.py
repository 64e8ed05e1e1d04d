"""What the API server does with a custom resource's schema, for tests:
defaulting, structural validation (jsonschema), list-type uniqueness, and the
CEL ``x-kubernetes-validations`` rules (cel-python), with errors worded like
the API server's (``spec.tags: Required value: ...``).

Used by the CRD tests and by the Kubernetes emulator (so `kubectl apply` of an
invalid document fails there as it would in a cluster).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "helm" / "hybrid-catalog" / "crds" / "cacheinvalidationpolicies.yaml"
# The copy the operator package ships (package data); must equal CRD_PATH byte for byte.
PACKAGED_CRD_PATH = ROOT / "operator" / "cache_operator" / "crd" / "cacheinvalidationpolicies.yaml"
EXAMPLES = ROOT / "operator" / "examples" / "policies.yaml"

_REASONS = {
    "FieldValueRequired": "Required value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueInvalid": "Invalid value",
    "FieldValueDuplicate": "Duplicate value",
}


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, f"{path} must hold exactly one document"
    return docs[0]


def _fmt(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<root>"


class CrdValidator:
    """Defaulting and validation of one version of a CRD."""

    def __init__(self, crd: Mapping[str, Any], version: str | None = None) -> None:
        self.crd = crd
        versions = crd["spec"]["versions"]
        chosen = next(v for v in versions if version is None or v["name"] == version)
        self.version = chosen
        self.schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
        self.kind = crd["spec"]["names"]["kind"]
        self.group = crd["spec"]["group"]
        self._cel = celpy.Environment()
        self._programs: dict[str, Any] = {}

    @property
    def printer_columns(self) -> list[dict[str, Any]]:
        return list(self.version.get("additionalPrinterColumns") or [])

    # ------------------------------------------------------- defaulting, pruning
    def default(self, obj: Any) -> Any:
        obj = copy.deepcopy(obj)
        self._default(self.schema, obj)
        return obj

    def _default(self, schema: Mapping[str, Any], value: Any) -> None:
        if isinstance(value, dict):
            props = schema.get("properties")
            if props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                for name in [k for k in value if k not in props]:
                    del value[name]  # pruning: the API server drops unknown fields
            for name, sub in (props or {}).items():
                if name not in value and "default" in sub:
                    value[name] = copy.deepcopy(sub["default"])
                if name in value:
                    self._default(sub, value[name])
        elif isinstance(value, list) and "items" in schema:
            for item in value:
                self._default(schema["items"], item)

    # ------------------------------------------------------------- validation
    def validate(self, obj: Any, old: Any = None) -> list[str]:
        """Every problem with an (already defaulted) object; [] when valid."""
        errors: list[str] = []
        validator = jsonschema.Draft7Validator(self.schema)
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = list(err.absolute_path)
            if err.validator == "required":  # worded as the API server does
                missing = err.message.split("'")[1]
                errors.append(f"{_fmt([*path, missing])}: Required value")
            else:
                errors.append(f"{_fmt(path)}: Invalid value: {err.message}")
        if errors:
            return errors  # CEL rules run on structurally valid objects only
        self._walk(self.schema, obj, old, [], errors)
        return errors

    def _walk(self, schema: Mapping[str, Any], value: Any, old: Any,
              path: list[str | int], errors: list[str]) -> None:
        list_type = schema.get("x-kubernetes-list-type")
        if isinstance(value, list) and list_type in ("set", "map"):
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen: set[Any] = set()
            for i, item in enumerate(value):
                ident = (tuple(item.get(k) for k in keys) if list_type == "map"
                         else yaml.safe_dump(item))
                if ident in seen:
                    errors.append(f"{_fmt([*path, i])}: Duplicate value: {item!r}")
                seen.add(ident)
        for rule in schema.get("x-kubernetes-validations") or []:
            uses_old = "oldSelf" in rule["rule"]
            if uses_old and old is None:
                continue  # transition rules apply to updates only
            if not self._check(rule["rule"], value, old):
                where = _fmt(path) + (rule.get("fieldPath") or "")
                if where.startswith("."):
                    where = where[1:]
                reason = _REASONS.get(rule.get("reason", "FieldValueInvalid"), "Invalid value")
                errors.append(f"{where}: {reason}: {rule.get('message') or rule['rule']}")
        if isinstance(value, dict):
            for name, sub in (schema.get("properties") or {}).items():
                if name in value:
                    sub_old = old.get(name) if isinstance(old, dict) else None
                    self._walk(sub, value[name], sub_old, [*path, name], errors)
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self._walk(schema["items"], item, None, [*path, i], errors)

    def _check(self, rule: str, value: Any, old: Any) -> bool:
        program = self._programs.get(rule)
        if program is None:
            program = self._programs[rule] = self._cel.program(self._cel.compile(rule))
        activation = {"self": celpy.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = program.evaluate(activation)
        except celpy.CELEvalError:
            # e.g. duration() of a value past Go's time.Duration range: the API
            # server reports an evaluation error as an invalid value, so it rejects.
            return False
        if isinstance(result, celpy.CELEvalError):
            return False
        return bool(result)

    def admit(self, obj: Any, old: Any = None) -> tuple[Any, list[str]]:
        """Default then validate, as the API server does on create/update."""
        defaulted = self.default(obj)
        return defaulted, self.validate(defaulted, old)
