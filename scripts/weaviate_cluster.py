#!/usr/bin/env python
"""Start / stop / inspect the local three-node Weaviate cluster: the same as
`hybrid-assets weaviate cluster start|stop|status|kill-node NAME` (see hybrid_assets/store/cluster.py).

    .venv/bin/python scripts/weaviate_cluster.py start
    WEAVIATE_URL=http://127.0.0.1:8600 WEAVIATE_GRPC_URL=http://127.0.0.1:50600 \
        HYBRID_WEAVIATE_REPLICATION_FACTOR=3 .venv/bin/hybrid-assets ingest
"""

import sys

from hybrid_assets.cli import main

if __name__ == "__main__":
    main(["weaviate", "cluster", *sys.argv[1:]], prog_name="weaviate_cluster.py")
