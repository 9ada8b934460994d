"""A Sphinx extension that renders the REST API reference from the
OpenAPI document (:func:`core4.api.v1.openapi.build_document`), so the
documentation cannot drift from the routes.

Use it in ``conf.py`` (``extensions = ["core4.api.v1.apidoc"]``) and write
``.. core4-openapi::`` where the reference goes.
"""

import json

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


class _Application:
    """Just what :func:`build_document` reads of a tornado application."""

    def __init__(self, containers, config):
        self.core4_containers = containers

        class Context:
            pass
        self.core4_context = Context()
        self.core4_context.config = config


def document():
    """Return the OpenAPI document of core4's own API container."""
    from core4.api.v1.container import CoreApiServer
    from core4.api.v1.openapi import build_document
    from core4.config import load_config
    return build_document(_Application([CoreApiServer], load_config()))


def _schema_text(schema):
    if not schema:
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    text = schema.get("type", "any")
    if "enum" in schema:
        text += " (%s)" % ", ".join(str(v) for v in schema["enum"])
    if "format" in schema:
        text += " (%s)" % schema["format"]
    return text


def render(doc):
    """Return the reStructuredText lines of the reference."""
    lines = []
    for path in sorted(doc["paths"]):
        for method, op in sorted(doc["paths"][path].items()):
            title = "%s %s" % (method.upper(), path)
            lines += [title, "-" * len(title), ""]
            lines += [op.get("summary", ""), ""]
            if op.get("security") == []:
                lines += ["*Public: no login needed.*", ""]
            params = op.get("parameters", [])
            if params:
                lines += ["Parameters:", ""]
                for param in params:
                    lines.append("* ``%s`` (%s, %s%s): %s" % (
                        param["name"], param["in"],
                        _schema_text(param.get("schema")),
                        ", required" if param.get("required") else "",
                        param.get("description", "")))
                lines.append("")
            body = (op.get("requestBody") or {}).get("content", {}).get(
                "application/json", {}).get("schema")
            if body:
                required = set(body.get("required", []))
                lines += ["JSON body:", ""]
                for name, schema in body.get("properties", {}).items():
                    lines.append("* ``%s`` (%s%s)" % (
                        name, _schema_text(schema),
                        ", required" if name in required else ""))
                lines.append("")
            codes = sorted(op.get("responses", {}))
            lines += ["Answers: %s." % ", ".join(codes), ""]
    return lines


class OpenApiDirective(Directive):
    """``.. core4-openapi::`` — the reference of every route."""

    has_content = False

    def run(self):
        """Parse the generated reStructuredText into nodes."""
        container = nodes.section()
        container.document = self.state.document
        self.state.nested_parse(StringList(render(document())),
                                self.content_offset, container,
                                match_titles=True)
        return container.children


class OpenApiJsonDirective(Directive):
    """``.. core4-openapi-json::`` — the raw document, as a code block."""

    def run(self):
        """Return a literal block of the document."""
        text = json.dumps(document(), indent=2, sort_keys=True)
        block = nodes.literal_block(text, text)
        block["language"] = "json"
        return [block]


def setup(app):
    """Register the directives with Sphinx."""
    app.add_directive("core4-openapi", OpenApiDirective)
    app.add_directive("core4-openapi-json", OpenApiJsonDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
