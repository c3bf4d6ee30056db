"""Allocation-heavy Python workload for Strata's real-program tests and benchmarks.

It exercises the patterns that dominate real Python programs: dicts that grow
and shrink, string building and splitting, lists of small objects, sorting,
and a JSON round trip. The output is deterministic (independent of hash
randomisation, addresses and timing), so two runs under different allocators
must print exactly the same lines.

Usage: python3 python_workload.py [SCALE]   (SCALE defaults to 1)
"""

import hashlib
import json
import sys


def lcg(seed):
    """Yield an endless deterministic stream of 31-bit pseudo-random integers."""
    state = seed
    while True:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        yield state


def digest(text):
    """Return a short, stable digest of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def dict_churn(rng, n):
    """Grow a dict, delete most of it, then grow it again with other keys."""
    table = {}
    for i in range(n):
        key = "k%08d" % next(rng)
        table[key] = [i, str(i), (i, i * 2)]
    removed = 0
    for key in list(table):
        if int(key[1:]) % 4 != 0:
            del table[key]
            removed += 1
    for i in range(n // 2):
        table[("second", i)] = {"index": i, "square": i * i}
    first_kind = sum(1 for key in table if isinstance(key, str))
    return "dict: total=%d removed=%d str_keys=%d" % (len(table), removed, first_kind)


def string_work(rng, n):
    """Build, split, join, replace and count strings of varied lengths."""
    words = []
    for _ in range(n):
        length = 1 + next(rng) % 24
        words.append("".join(chr(97 + next(rng) % 26) for _ in range(length)))
    text = " ".join(words)
    upper = text.upper().replace("A", "<a>")
    pieces = upper.split("<")
    counts = {}
    for word in words:
        counts[word[0]] = counts.get(word[0], 0) + len(word)
    summary = ",".join("%s:%d" % (k, counts[k]) for k in sorted(counts))
    return "strings: words=%d chars=%d pieces=%d digest=%s letters=%s" % (
        len(words), len(text), len(pieces), digest(upper), digest(summary))


class Record:
    """A small object, as real programs create by the million."""

    __slots__ = ("ident", "name", "score", "tags")

    def __init__(self, ident, name, score, tags):
        self.ident = ident
        self.name = name
        self.score = score
        self.tags = tags


def list_and_sort(rng, n):
    """Create many small objects and sort them by several keys."""
    records = [
        Record(i, "name-%d" % (next(rng) % 10000), next(rng) % 1000,
               ["t%d" % (next(rng) % 7) for _ in range(next(rng) % 4)])
        for i in range(n)
    ]
    by_score = sorted(records, key=lambda r: (r.score, r.name, r.ident))
    by_name = sorted(records, key=lambda r: (r.name, -r.ident))
    tag_lists = sorted(records, key=lambda r: (len(r.tags), r.tags, r.ident))
    top = [r.ident for r in by_score[:5]]
    line = "|".join("%d:%s:%d" % (r.ident, r.name, r.score) for r in by_name[::997])
    return "lists: n=%d top=%s names=%s tags=%s" % (
        n, top, digest(line), digest(repr([r.tags for r in tag_lists[::501]])))


def json_round_trip(rng, n):
    """Serialise a nested document to JSON and parse it back."""
    document = {
        "users": [
            {
                "id": i,
                "name": "user-%d" % i,
                "balance": (next(rng) % 100000) / 100.0,
                "friends": [next(rng) % n for _ in range(next(rng) % 6)],
                "profile": {"active": i % 3 == 0, "langs": ["en", "fr", "de"][: i % 4]},
            }
            for i in range(n)
        ],
        "meta": {"version": 3, "note": "deterministic"},
    }
    encoded = json.dumps(document, sort_keys=True)
    decoded = json.loads(encoded)
    again = json.dumps(decoded, sort_keys=True, indent=1)
    assert decoded == document, "JSON round trip changed the document"
    friends = sum(len(u["friends"]) for u in decoded["users"])
    return "json: bytes=%d pretty_bytes=%d friends=%d digest=%s" % (
        len(encoded), len(again), friends, digest(encoded))


def main():
    """Run every phase and print one deterministic line per phase."""
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rng = lcg(20240601)
    for round_number in range(scale):
        print("round %d" % round_number)
        print(dict_churn(rng, 120000))
        print(string_work(rng, 80000))
        print(list_and_sort(rng, 80000))
        print(json_round_trip(rng, 30000))


if __name__ == "__main__":
    main()
