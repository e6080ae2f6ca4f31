"""Weaviate: the embedded server's lifecycle, the client connection, and the collections we use."""
