"""Dagster resources: one per external system."""


import contextlib
import dataclasses
from typing import Iterator

import dagster as dg
from pydantic import Field

from hybrid_assets.settings import Settings, load_settings
from hybrid_assets.store.client import open_client


class WeaviateResource(dg.ConfigurableResource):
    """The Weaviate server: embedded (started on demand) unless ``url`` / WEAVIATE_URL is set."""
    url: str | None = Field(default=None, description="Remote Weaviate URL; empty = embedded server")
    api_key: str | None = Field(default=None, description="API key for a remote Weaviate")

    def settings(self) -> Settings:
        settings = load_settings()
        if self.url:
            settings = dataclasses.replace(settings, weaviate_url=self.url, weaviate_api_key=self.api_key)
        return settings

    @contextlib.contextmanager
    def client(self) -> Iterator:
        with open_client(self.settings()) as client:
            yield client


# Picked up by ``load_from_defs_folder`` (hybrid_assets/definitions.py): every asset gets the same server.
defs = dg.Definitions(resources={"weaviate": WeaviateResource()})
