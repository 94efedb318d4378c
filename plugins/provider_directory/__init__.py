"""The provider-directory import: the document the application's API builds for one record.

The DAG passes ``"provider_directory.documents:build_provider_document"`` as the
loader's ``transform``; replace it with your own ``record -> document`` function.
"""

from __future__ import annotations

from provider_directory.documents import SCHEMA_VERSION, build_provider_document

__all__ = ["SCHEMA_VERSION", "build_provider_document"]
