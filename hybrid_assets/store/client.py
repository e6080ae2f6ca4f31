"""Open a Weaviate client: the embedded server by default, a remote one when WEAVIATE_URL is set.

The client's own start-up checks (version/metadata calls, PyPI version lookup) are skipped: we do one
readiness probe with a short timeout instead, so a missing server is one clear error in seconds.
"""

from __future__ import annotations

import contextlib
from typing import Iterator
from urllib.parse import urlparse

from hybrid_assets.settings import Settings, load_settings
from hybrid_assets.store.server import EmbeddedServer, WeaviateUnavailable, is_ready


def connect(settings: Settings | None = None, start_embedded: bool = True):
    """Return a connected ``weaviate.WeaviateClient``; the caller closes it (or use ``open_client``)."""
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    settings = settings or load_settings()
    config = AdditionalConfig(timeout=Timeout(init=5, query=60, insert=180))
    if settings.embedded:
        server = EmbeddedServer.from_settings(settings)
        if start_embedded:
            server.start()
        elif not server.is_ready(timeout=3):
            raise WeaviateUnavailable(
                f"No Weaviate server answers on {server.url}; start it with `hybrid-assets weaviate start`."
            )
        return weaviate.connect_to_local(
            host="127.0.0.1",
            port=server.http_port,
            grpc_port=server.grpc_port,
            skip_init_checks=True,
            additional_config=config,
        )

    url = urlparse(settings.weaviate_url)
    if not url.hostname:
        raise WeaviateUnavailable(f"WEAVIATE_URL={settings.weaviate_url!r} is not a URL like https://host:8080")
    if not is_ready(settings.weaviate_url, timeout=5):
        raise WeaviateUnavailable(
            f"Weaviate at {settings.weaviate_url} is not reachable or not ready (checked "
            "/v1/.well-known/ready with a 5 s timeout). Check WEAVIATE_URL, or unset it to use the embedded server."
        )
    secure = url.scheme == "https"
    grpc = urlparse(settings.weaviate_grpc_url) if settings.weaviate_grpc_url else None
    auth = Auth.api_key(settings.weaviate_api_key) if settings.weaviate_api_key else None
    return weaviate.connect_to_custom(
        http_host=url.hostname,
        http_port=url.port or (443 if secure else 80),
        http_secure=secure,
        grpc_host=(grpc.hostname if grpc else url.hostname),
        grpc_port=(grpc.port if grpc and grpc.port else 50051),
        grpc_secure=(grpc.scheme in ("https", "grpcs") if grpc else secure),
        auth_credentials=auth,
        skip_init_checks=True,
        additional_config=config,
    )


@contextlib.contextmanager
def open_client(settings: Settings | None = None, start_embedded: bool = True) -> Iterator:
    client = connect(settings, start_embedded=start_embedded)
    try:
        yield client
    finally:
        client.close()
