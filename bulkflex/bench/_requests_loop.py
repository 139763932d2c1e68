# The "plain requests loop" peer of `bulkflex bench`, run as a script (python _requests_loop.py
# LIST DEST; LIST has one "URL<TAB>relative path" a line): one file at a time, requests.get with
# stream=True, iter_content(8192), no session, no checksum, no resume. It imports nothing of
# bulkflex, so it measures requests alone.

from __future__ import annotations

import sys
from pathlib import Path

import requests


def main(argv: list[str]) -> int:
    """Download every line of LIST into DEST; an HTTP error stops the loop (exit 1)."""
    listing, dest = Path(argv[0]), Path(argv[1])
    for line in listing.read_text(encoding="utf-8").splitlines():
        url, rel = line.split("\t")
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            with open(out, "wb") as f:
                for chunk in response.iter_content(8192):
                    f.write(chunk)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
