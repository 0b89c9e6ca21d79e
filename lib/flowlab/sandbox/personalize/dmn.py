"""Read Sitecore's decision models (DMN 1.1 XML, Camunda dialect) into the sandbox's model JSON.

Sitecore exports a decision model as the DMN of its production variant (reference "sitecore-exports.md",
"Decision models"; §5.1 of the API reference). :func:`parse_dmn` turns one into the JSON form
:mod:`~flowlab.sandbox.personalize.decisions` compiles, so a DMN model runs through the same engine, in the
same guest-code workers, as a model posted as JSON:

* ``<decision>`` with ``<literalExpression expressionLanguage="javascript">`` → a programmable; the
  ``<variable name>`` is its output reference and ``typeRef`` its output type.
* ``<decisionTable hitPolicy aggregation>`` → a decision table (UNIQUE when no hit policy is given, as in
  DMN); inputs keep their ``typeRef`` and ``expressionLanguage``; rules keep their ids (``Table_0``).
* ``expressionLanguage="web-service"`` → a connection node holding the embedded connection JSON with its
  secrets masked (:func:`mask_connection`; exports carry none anyway). The engine calls it during execution
  (``connections.py``), with the tenant's connection of the same ref when there is one (its secrets).
* ``<informationRequirement><requiredDecision href="#id">`` → ``requires`` (evaluation order);
  ``requiredInput`` (the Guest) and authority requirements (the offer catalogue) need nothing.
* Decision-template placeholders ``[[Label | Type | default | {opts}]]`` left in the XML are replaced by
  their default; one without a default stays, and :attr:`DmnModel.warnings` names it.

The XML is untrusted: it is parsed with ``defusedxml`` (no DTDs, entities or external references, so no
billion laughs and no file reads) and refused over ``MAX_DMN_BYTES``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from xml.etree.ElementTree import Element, ParseError

import defusedxml  # type: ignore[import-untyped]
import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]

from flowlab.sandbox.personalize.decisions import DecisionModelError

__all__ = [
    "MASK",
    "MAX_DMN_BYTES",
    "DmnError",
    "DmnModel",
    "fill_placeholders",
    "mask_connection",
    "parse_dmn",
]

MAX_DMN_BYTES: Final = 2 * 1024 * 1024
#: What a secret is replaced with wherever the sandbox shows a connection.
MASK: Final = "********"

_PLACEHOLDER = re.compile(r"\[\[([^\[\]]*?)\]\]")
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[-_]?key|credential|private", re.IGNORECASE)
_SECRET_HEADERS = re.compile(r"key|secret|token|auth|password|signature|cookie", re.IGNORECASE)
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:[^=&#]*(?:key|secret|token|password|signature|sig)[^=&#]*)=)(?P<value>[^&#]*)",
    re.IGNORECASE,
)


class DmnError(DecisionModelError):
    """The DMN file cannot be used; the message says which file part and what to fix."""


@dataclass
class DmnModel:
    """A DMN file read into sandbox model JSON, with what the importer must report about it."""

    #: ``{ref, name, variantName, nodes: [...]}``: what ``Tenant.add_decision_model`` takes
    definition: dict[str, Any]
    #: placeholders without a default, and other things a person should look at
    warnings: list[str] = field(default_factory=list)
    #: what the sandbox does not run of this model (nothing today; kept for the import report)
    limitations: list[str] = field(default_factory=list)

    @property
    def node_names(self) -> list[str]:
        return [str(n["name"]) for n in self.definition["nodes"]]


def fill_placeholders(text: str, warnings: list[str], where: str) -> str:
    """Replace ``[[Label | Type | default | {opts}]]`` by its default; note the ones without a default."""

    def replace(match: re.Match[str]) -> str:
        parts = [p.strip() for p in match.group(1).split("|")]
        if len(parts) >= 3 and parts[2] != "" and not parts[2].startswith("{"):
            return parts[2]
        warnings.append(
            f"{where}: placeholder '{match.group(0)}' has no default value; edit the definition to fill it in"
        )
        return match.group(0)

    return _PLACEHOLDER.sub(replace, text) if "[[" in text else text


def mask_connection(connection: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a connection's JSON with passwords, client secrets, tokens, key headers and keys in URLs masked."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if isinstance(v, str) and _SECRET_KEYS.search(str(k)) and v:
                    out[k] = MASK
                else:
                    out[k] = walk(v, str(k))
            return out
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str) and ("url" in key.lower() or key == "connectionUrl"):
            return _SECRET_QUERY.sub(lambda m: m.group("key") + (MASK if m.group("value") else ""), value)
        return value

    masked: dict[str, Any] = walk(connection)
    headers = masked.get("customHeaders")
    if isinstance(headers, list):
        for header in headers:
            if (
                isinstance(header, dict)
                and _SECRET_HEADERS.search(str(header.get("name", "")))
                and header.get("value")
            ):
                header["value"] = MASK
    auth = masked.get("auth")
    if isinstance(auth, dict):
        for k in ("password", "clientSecret", "client_secret", "accessToken", "token"):
            if auth.get(k):
                auth[k] = MASK
    return masked


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _child(element: Element, name: str) -> Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _text(element: Element | None) -> str:
    if element is None:
        return ""
    text = _child(element, "text")
    return (text.text if text is not None else element.text) or ""


def _attr(element: Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def parse_dmn(xml: str | bytes, *, ref: str, name: str, variant_name: str = "v1") -> DmnModel:
    """Read one DMN file into model JSON; raises :class:`DmnError` saying what is wrong and where."""
    raw = xml.encode() if isinstance(xml, str) else xml
    if len(raw) > MAX_DMN_BYTES:
        raise DmnError(
            f"decision model '{name}': the DMN file is {len(raw):,} bytes, over the {MAX_DMN_BYTES:,}-byte limit"
        )
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise DmnError(
            f"decision model '{name}': the DMN file declares a DTD, entities or external references "
            f"({type(exc).__name__}), which the sandbox refuses (they can expand without bound or read files); "
            "Sitecore's exports have none: remove the <!DOCTYPE> / <!ENTITY> part"
        ) from None
    except ParseError as exc:
        raise DmnError(f"decision model '{name}': the DMN file is not well-formed XML ({exc})") from None
    if _local(root.tag) != "definitions":
        raise DmnError(
            f"decision model '{name}': the root element is <{_local(root.tag)}>, not a DMN <definitions>"
        )
    model = DmnModel({"ref": ref, "name": name, "variantName": variant_name, "nodes": []})
    decisions = _children(root, "decision")
    if not decisions:
        raise DmnError(f"decision model '{name}': the DMN file has no <decision> element")
    known = {d.get("id") for d in decisions}
    for decision in decisions:
        model.definition["nodes"].append(_decision(decision, known, model))
    return model


def _decision(decision: Element, known: set[str | None], model: DmnModel) -> dict[str, Any]:
    model_name = model.definition["name"]
    node_id = decision.get("id") or ""
    name = (decision.get("name") or node_id).strip()
    where = f"decision model '{model_name}', node '{name}'"
    if not node_id:
        raise DmnError(f"{where}: the <decision> has no id")
    requires: list[str] = []
    for requirement in _children(decision, "informationRequirement"):
        required = _child(requirement, "requiredDecision")
        href = (required.get("href") or "") if required is not None else ""
        if href:
            target = href.lstrip("#")
            if target not in known:
                raise DmnError(f"{where}: it requires decision '{href}', which is not in the file")
            requires.append(target)
    node: dict[str, Any] = {"id": node_id, "name": name, "requires": requires}
    variable = _child(decision, "variable")
    literal = _child(decision, "literalExpression")
    table = _child(decision, "decisionTable")
    if literal is not None:
        if variable is None or not variable.get("name"):
            raise DmnError(
                f"{where}: a literal expression needs a <variable name=...> (its output reference)"
            )
        language = (literal.get("expressionLanguage") or "javascript").lower()
        text = fill_placeholders(_text(literal), model.warnings, where)
        node["outputReference"] = variable.get("name")
        if language == "web-service":
            try:
                connection = json.loads(text)
            except ValueError as exc:
                raise DmnError(f"{where}: the embedded connection is not valid JSON ({exc})") from None
            if not isinstance(connection, dict):
                raise DmnError(f"{where}: the embedded connection must be a JSON object")
            node.update(type="connection", connection=mask_connection(connection))
            return node
        if language not in ("javascript", "js"):
            raise DmnError(f"{where}: expression language {language!r} is not supported (javascript only)")
        node.update(type="programmable", source=text, outputType=variable.get("typeRef") or "string")
        return node
    if table is not None:
        return _table(table, node, where, model)
    raise DmnError(f"{where}: the decision has neither a literal expression nor a decision table")


def _table(table: Element, node: dict[str, Any], where: str, model: DmnModel) -> dict[str, Any]:
    inputs = []
    for i, item in enumerate(_children(table, "input")):
        expression = _child(item, "inputExpression")
        text = fill_placeholders(_text(expression).strip(), model.warnings, where)
        if not text:
            raise DmnError(f"{where}: input {i + 1} ('{item.get('label') or ''}') has no input expression")
        spec: dict[str, Any] = {"label": item.get("label") or text, "expression": text}
        if expression is not None and expression.get("typeRef"):
            spec["typeRef"] = expression.get("typeRef")
        language = (expression.get("expressionLanguage") if expression is not None else None) or item.get(
            "expressionLanguage"
        )
        if language and language.lower() in ("javascript", "js"):
            spec["expressionLanguage"] = "javascript"
        elif language and language.lower() not in ("feel", "juel"):
            raise DmnError(f"{where}: input '{spec['label']}' uses expression language {language!r}")
        inputs.append(spec)
    outputs = []
    for item in _children(table, "output"):
        out: dict[str, Any] = {
            "name": item.get("name") or item.get("label") or "output",
            "typeRef": item.get("typeRef") or "string",
        }
        template = _attr(item, "offerTemplateRef")
        if template:
            out["offerTemplateRef"] = template
        outputs.append(out)
    rules = []
    for rule in _children(table, "rule"):
        rules.append(
            {
                "id": rule.get("id") or None,
                "inputEntries": [
                    fill_placeholders(_text(e), model.warnings, where) for e in _children(rule, "inputEntry")
                ],
                "outputEntries": [
                    fill_placeholders(_text(e), model.warnings, where) for e in _children(rule, "outputEntry")
                ],
            }
        )
    node.update(
        type="decisionTable",
        hitPolicy=(table.get("hitPolicy") or "UNIQUE").replace("_", " "),
        inputs=inputs,
        outputs=outputs,
        rules=rules,
    )
    if table.get("aggregation"):
        node["aggregation"] = table.get("aggregation")
    return node
