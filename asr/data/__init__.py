"""Training data: JSONL manifests, converters from common layouts, and up-front checks."""
from .manifest import ManifestError, Utterance, read_manifest, write_manifest
from .sources import SOURCE_TYPES, SourceError, detect_source_type, load_source
from .validate import BadUtterance, Report, validate

__all__ = [
    "BadUtterance",
    "ManifestError",
    "Report",
    "SOURCE_TYPES",
    "SourceError",
    "Utterance",
    "detect_source_type",
    "load_source",
    "read_manifest",
    "validate",
    "write_manifest",
]
