# The seed's download loop, as a peer: one file at a time, requests.get(stream=True),
# iter_content(8192), written to disk. No session (a new connection per file), no checksum, no
# resume: exactly the naive loop bulkflex replaces.
#
# Run: python _requests_loop.py LIST DEST   (LIST: one "URL<TAB>relative path" a line)

from __future__ import annotations

import sys
from pathlib import Path

import requests


def main() -> int:
    listing, dest = Path(sys.argv[1]), Path(sys.argv[2])
    for line in listing.read_text().splitlines():
        url, rel = line.split("\t")
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with requests.get(url, stream=True, timeout=60) as r:
            r.raise_for_status()
            with open(out, "wb") as f:
                for chunk in r.iter_content(8192):
                    f.write(chunk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
