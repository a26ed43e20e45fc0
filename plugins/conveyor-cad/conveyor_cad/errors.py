"""The CAD plugin's error codes (``conveyor_error_codes``): inputs, formats, conversions, connectors, references."""

from __future__ import annotations

from conveyor.plugin_api import ErrorCode

SOURCE = "conveyor_cad"

CODES: tuple[ErrorCode, ...] = (
    ErrorCode("file_not_found", False, "The payload names a file id that has no row in conveyor_files.",
              "Submit with the id the file was stored under; check the tenant.", source=SOURCE),
    ErrorCode("missing_file_id", False, "The payload has no file_id but the job kind needs one.",
              "Add \"file_id\" to the payload.", source=SOURCE),
    ErrorCode("unsupported_format", False, "No registered converter or handler accepts this input format.",
              "Run `conveyor plugins` to see what is loaded and install a plugin for the format.", source=SOURCE),
    ErrorCode("connector_failed", True, "An external connector service answered with an error or not at all.",
              "Check the connector's URL, token and health; the job retries with its policy.", source=SOURCE),
    ErrorCode("conversion_failed", False, "The converter ran and could not produce a result from the input.",
              "Open the input in a desktop tool; `conveyor diagnose JOB` shows the converter's output.",
              source=SOURCE),
    ErrorCode("empty_geometry", False, "The converter read the file but it holds no faces or a degenerate "
              "bounding box (empty, truncated or unreadable input that a library accepted).",
              "Open the file in a desktop CAD tool; re-export it with its solids or surfaces included.",
              source=SOURCE),
    ErrorCode("missing_dependency", False, "A library the converter needs is not installed on the worker.",
              "pip install 'conveyor-jobs[cad]' (from a checkout: plugins/conveyor-cad) on every worker host, "
              "then resubmit.", source=SOURCE),
    ErrorCode("unsafe_reference", False, "The file points at data outside itself: a glTF buffer or image URI "
              "that is an absolute path, a URL or a ../ path. Such references are never followed.",
              "Upload a .glb, or a .gltf whose buffers and images are embedded (data: URIs).", source=SOURCE),
    ErrorCode("not_converted", False, "An answer of the HTTP API, never a job's code: the file exists but has "
              "no such derivative (yet): its conversion is pending or running, failed, or made none (a 2D "
              "drawing has no geometry).",
              "Read GET /api/v1/file/{id}: wait while conversion_status is pending or processing; "
              "conversion_error says why a failed file has none.", source=SOURCE),
)
