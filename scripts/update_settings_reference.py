"""Rewrites the configuration reference in docs/operations.md from the settings model."""

from pathlib import Path

from metrics_pipeline.settings import configuration_reference

PAGE = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
BEGIN = (
    "<!-- generated from metrics_pipeline/settings.py by scripts/update_settings_reference.py -->\n"
)
END = "<!-- end of generated reference -->"


def with_reference(page: str) -> str:
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"{PAGE}: the markers of the generated reference are missing")
    return head + BEGIN + configuration_reference() + END + tail


if __name__ == "__main__":
    PAGE.write_text(with_reference(PAGE.read_text()))
