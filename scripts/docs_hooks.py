"""MkDocs hooks: pages generated from the code at build time, so they cannot drift from it.

- ``<!-- openapi -->`` (in ``docs/router-api.md``) becomes one section per route of the router's
  ``create_app().openapi()``, and the schema itself is published as ``openapi.json``.
- ``<!-- cli -->`` (in ``docs/cli.md``) becomes the ``--help`` of ``meshcore`` and each command.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

OPENAPI_MARKER = "<!-- openapi -->"
CLI_MARKER = "<!-- cli -->"
SCHEMA_FILE = "openapi.json"


@cache
def openapi_schema() -> dict[str, Any]:
    from meshcore_router.app import create_app  # builds the app; starts nothing

    schema: dict[str, Any] = create_app().openapi()
    return schema


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, SCHEMA_FILE, content=json.dumps(openapi_schema(), indent=2)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if OPENAPI_MARKER in markdown:
        markdown = markdown.replace(OPENAPI_MARKER, routes_markdown(openapi_schema()))
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    return markdown


def cli_markdown() -> str:
    """The help of ``meshcore`` and of each of its commands, as the terminal shows it."""
    import click

    from meshcore_sdk.cli import main

    help_options = main.context_settings.get("help_option_names")
    root = click.Context(
        main, info_name="meshcore", terminal_width=100, max_content_width=100, help_option_names=help_options
    )
    sections = [_fenced(main.get_help(root))]
    for name in main.list_commands(root):
        command = main.get_command(root, name)
        if command is not None:
            context = click.Context(command, info_name=name, parent=root, terminal_width=100, max_content_width=100)
            sections.append(f"## `meshcore {name}`\n\n{_fenced(command.get_help(context))}")
    return "\n\n".join(sections)


def _fenced(text: str) -> str:
    return f"```text\n{text}\n```"


def routes_markdown(schema: dict[str, Any]) -> str:
    """One section per route: method, path, what it does, its parameters and answers."""
    sections = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            lines = [f"### `{method.upper()} {path}`", "", _description(operation), ""]
            for parameter in operation.get("parameters", []):
                lines.append(f"- parameter `{parameter['name']}` ({parameter['in']})")
            for status, answer in operation.get("responses", {}).items():
                lines.append(f"- answers `{status}`: {answer.get('description', '')}")
            sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _description(operation: dict[str, Any]) -> str:
    text = operation.get("description") or operation.get("summary") or ""
    return text.replace("``", "`")
