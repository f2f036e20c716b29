"""Annotation formats: one module per format, each registered in FORMATS by name.

A format is an object with `name`, `description`, `sniff(path, head) -> bool` (head = the first
bytes of the file) and `parse(path, options) -> Manifest`. Importing this package registers all.
"""

from facedata.parsers.base import FORMATS, ParseOptions, format_warnings, ingest, sniff_confidence, sniff_format

__all__ = ["FORMATS", "ParseOptions", "format_warnings", "ingest", "sniff_confidence", "sniff_format"]
