#!/usr/bin/env python3
"""Regenerates tests/fuzz/seeds/ from the consent fixtures.

One file per distinct fixture string (named by its SHA-1, as libFuzzer names
corpus files), plus a few whole-request seeds (`tc \n gpp \n country \n
region`) for the Signals::decode path of the target.
"""
import hashlib
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
fixtures = here.parent / "fixtures" / "consent"
vectors = json.loads((fixtures / "vectors.json").read_text())
policy = json.loads((fixtures / "policy_strings.json").read_text())

tcf = [v["string"] for v in vectors["tcf"]]
gpp = [v["string"] for v in vectors["gpp"]]
for s in policy["strings"].values():
    (tcf if s.get("kind") == "tcf" else gpp).append(s["string"])

seeds = set(tcf) | set(gpp)
seeds |= {
    f"{tcf[0]}\n{gpp[0]}\nDE\n",
    f"\n{gpp[-1]}\nUS\nCA",
    f"{tcf[-1]}\n\nFR",
}

out = here / "seeds"
out.mkdir(exist_ok=True)
for old in out.iterdir():
    old.unlink()
for s in sorted(seeds):
    data = s.encode()
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
print(f"{len(seeds)} seeds in {out}")
