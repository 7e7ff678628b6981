"""Ingestion: input files (bytes) to text to chunks, with a record of every file or line left out and why.

Pure: the caller passes ``(key, bytes)`` pairs and writes the results; nothing here touches storage. Modules:
``readers`` (one reader per file type: .txt/.md, .pdf, .docx, .jsonl records), ``chunking`` (text to chunks at
natural boundaries, stable ids, exact duplicates kept once).
"""

from core.ingest.chunking import SUPPORTED_EXTENSIONS, IngestResult, ingest

__all__ = ["SUPPORTED_EXTENSIONS", "IngestResult", "ingest"]
