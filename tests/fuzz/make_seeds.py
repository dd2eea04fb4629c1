#!/usr/bin/env python3
"""Regenerates tests/fuzz/seeds/<target>/ for every fuzz target.

    tests/fuzz/make_seeds.py [target...]     # default: all of them

Each seed is one file named by its SHA-1, as libFuzzer names corpus files.
Only the standard library is used (no protobuf, no pyjwt).

- consent_strings: one file per distinct fixture string from
  tests/fixtures/consent/, plus a few whole-request seeds (`tc \\n gpp \\n
  country \\n region`) for the Signals::decode path of the target.
- requests: protobuf-encoded request messages of the candor.v1 services
  (hand-encoded below, field numbers from proto/candor/v1/*.proto), valid
  and invalid, using the bundled caravan-lgbm features and fixture consent
  strings.
- tokens: HS256 JWTs signed with the key in fuzz_targets/tokens.rs (valid,
  expired, too long-lived, wrongly signed, wrong claims, other algorithms,
  malformed) and the API keys configured there.
- manifests: the bundled model manifests (models/*/*/manifest.toml), the
  fixture packages' manifests (tests/fixtures/packages/), and small variants
  derived from them (a few features, other types, purposes and sections).
"""
import base64
import hashlib
import hmac
import json
import math
import pathlib
import struct
import sys
import tomllib

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
fixtures = here.parent / "fixtures"


def consent_fixtures():
    consent = fixtures / "consent"
    vectors = json.loads((consent / "vectors.json").read_text())
    policy = json.loads((consent / "policy_strings.json").read_text())
    tcf = [v["string"] for v in vectors["tcf"]]
    gpp = [v["string"] for v in vectors["gpp"]]
    for s in policy["strings"].values():
        (tcf if s.get("kind") == "tcf" else gpp).append(s["string"])
    return tcf, gpp


# --- consent_strings --------------------------------------------------------


def consent_strings_seeds():
    tcf, gpp = consent_fixtures()
    seeds = set(tcf) | set(gpp)
    seeds |= {
        f"{tcf[0]}\n{gpp[0]}\nDE\n",
        f"\n{gpp[-1]}\nUS\nCA",
        f"{tcf[-1]}\n\nFR",
    }
    return [s.encode() for s in seeds]


# --- requests: a minimal protobuf encoder -----------------------------------


def varint(n):
    n &= (1 << 64) - 1  # negative int32/int64 are ten-byte two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field, wire_type):
    return varint(field << 3 | wire_type)


def uint(field, n):
    """int32, int64, uint32, uint64, bool or enum field."""
    return tag(field, 0) + varint(int(n))


def double(field, x):
    return tag(field, 1) + struct.pack("<d", x)


def raw(field, data):
    """A length-delimited field: bytes, a string or an embedded message."""
    return tag(field, 2) + varint(len(data)) + data


def string(field, s):
    return raw(field, s.encode())


def packed_doubles(field, xs):
    return raw(field, b"".join(struct.pack("<d", x) for x in xs))


def packed_uints(field, ns):
    return raw(field, b"".join(varint(n) for n in ns))


def model_ref(name, version=""):
    return raw(1, string(1, name) + (string(2, version) if version else b""))


def feature_value(v):
    """FeatureValue: number = 1 (double), integer = 2 (int64), category = 3."""
    if v is None:
        return b""
    if isinstance(v, float):
        return double(1, v)
    if isinstance(v, int):
        return uint(2, v)
    return string(3, v)


def features_map(field, features):
    """map<string, FeatureValue>: one entry message (key = 1, value = 2) each."""
    return b"".join(
        raw(field, string(1, name) + raw(2, feature_value(v)))
        for name, v in features.items()
    )


def context(
    placement="", campaign="", ad="", country="", region="", age=0,
    tc="", gpp="", gpc=False, mode=None,
):
    """RequestContext; `mode` is the four ConsentModeFlags values."""
    fields = [
        string(1, placement) if placement else b"",
        string(2, campaign) if campaign else b"",
        string(3, ad) if ad else b"",
        string(4, country) if country else b"",
        string(5, region) if region else b"",
        uint(6, age) if age else b"",
        string(7, tc) if tc else b"",
        string(8, gpp) if gpp else b"",
        uint(9, 1) if gpc else b"",
        raw(10, b"".join(uint(i + 1, v) for i, v in enumerate(mode))) if mode else b"",
    ]
    return b"".join(fields)


def explain_options(mode, method=0):
    return uint(1, mode) + (uint(2, method) if method else b"")


def timestamp(seconds, nanos=0):
    return uint(1, seconds) + (uint(2, nanos) if nanos else b"")


def requests_seeds():
    tcf, gpp = consent_fixtures()
    lgbm = tomllib.loads((root / "models/caravan-lgbm/1.0.0/manifest.toml").read_text())
    names = [f["name"] for f in sorted(lgbm["features"], key=lambda f: f["position"])]
    full = {name: 1 + i % 5 for i, name in enumerate(names)}
    few = {names[0]: 3, names[1]: 2.5, names[2]: "A", names[3]: None}
    positional = [float(1 + i % 5) for i in range(len(names))]
    positional[4] = math.nan
    lgbm_ref = model_ref("caravan-lgbm")
    pinned = model_ref("caravan-lgbm", "1.0.0")
    subject_id = string(2, "publisher-user-42")

    seeds = []
    # ScoreRequest: model = 1, subject_id = 2, features = 3, context = 4,
    # explain = 5, values = 6.
    seeds += [
        lgbm_ref + subject_id + features_map(3, full)
        + raw(4, context("homepage-top", "caravan-2026", "ad-7", "DE", tc=tcf[0]))
        + raw(5, explain_options(1)),
        pinned + subject_id + raw(4, context(
            country="US", region="CA", gpp=gpp[-1], gpc=True, mode=[1, 2, 1, 0],
        )) + raw(5, explain_options(2, 2)) + packed_doubles(6, positional),
        model_ref("caravan-logreg") + features_map(3, few)
        + raw(4, context(country="GB", age=2, gpp=gpp[0], mode=[2, 2, 2, 2])),
        # Invalid: both named and positional values; region without country;
        # unknown enum values; a version that is not semver.
        pinned + features_map(3, few) + packed_doubles(6, [1.0, 2.0]),
        lgbm_ref + packed_doubles(6, [1.0]),
        lgbm_ref + raw(4, context(region="CA", age=9)),
        lgbm_ref + raw(4, context(mode=[0, 7, 0, 0])),
        lgbm_ref + raw(5, explain_options(5, 9)),
        model_ref("caravan-lgbm", "1.0") + features_map(3, few),
        model_ref("", "1.0.0"),
    ]
    # ScoreBatchRequest: model = 1, subject_id = 2, context = 3, rows = 4,
    # explain = 5. BatchRow: features = 1, campaign_id = 2, ad_id = 3,
    # values = 4.
    rows = [
        features_map(1, few) + string(2, "caravan-2026") + string(3, "ad-1"),
        features_map(1, {names[0]: 4}) + string(3, "ad-2"),
        packed_doubles(4, positional),
    ]
    seeds += [
        pinned + subject_id + raw(3, context("p", country="NL", tc=tcf[-1]))
        + b"".join(raw(4, r) for r in rows) + raw(5, explain_options(2)),
        lgbm_ref + raw(4, rows[0]) + raw(4, rows[2]),
    ]
    # ExplainRequest: model = 1, features = 2, values = 3, method = 4.
    # ExplainBatchRequest: model = 1, rows = 2, method = 3.
    seeds += [
        pinned + features_map(2, full) + uint(4, 2),
        pinned + packed_doubles(3, positional) + uint(4, 1),
        pinned + b"".join(raw(2, r) for r in rows) + uint(3, 2),
    ]
    # RecordConsentRequest: subject_id = 1, purposes = 2 (PurposeChoice:
    # tcf_purpose = 1, legal_basis = 2, granted = 3), method = 3,
    # collected_at = 4, notice = 5 (url = 1, version = 2, sha256 = 3),
    # jurisdiction = 6, language = 7, data_categories = 8.
    choices = b"".join(
        raw(2, uint(1, p) + uint(2, basis) + (uint(3, 1) if granted else b""))
        for p, basis, granted in [(1, 1, True), (2, 2, True), (3, 0, False), (4, 1, True)]
    )
    notice = raw(5, string(1, "https://publisher.example/privacy") + string(2, "2026-11")
                 + string(3, hashlib.sha256(b"notice").hexdigest()))
    seeds += [
        string(1, "publisher-user-42") + choices + uint(3, 1)
        + raw(4, timestamp(1_790_000_000, 5)) + notice + string(6, "DE")
        + string(7, "de") + string(8, "income") + string(8, "zip_code_demographics"),
        string(1, "u") + raw(2, uint(1, 12) + uint(2, 7)) + uint(3, 9)
        + raw(4, timestamp(-5, -1)) + string(6, "US-CA"),
        string(1, "u") + raw(4, timestamp(2**63 - 1, 999_999_999)),
        string(1, "u") + raw(4, timestamp(0, 2_000_000_000)),
    ]
    # WithdrawConsentRequest: subject_id = 1, tcf_purposes = 2 (packed),
    # kind = 3, method = 4.
    seeds += [
        string(1, "publisher-user-42") + packed_uints(2, [1, 3, 300]) + uint(3, 2)
        + string(4, "privacy centre toggle"),
        string(1, "u") + uint(3, 1),
        string(1, "u") + uint(2, 5) + uint(3, 3),  # an unpacked repeated field
    ]
    # GetExplanationRequest: decision_id = 1, audience = 2, language = 3.
    # ListDecisionsRequest: subject_id = 1, limit = 2. ExportSubjectData-
    # Request: subject_id = 1, language = 2. Get/GetHistory/Erase: subject_id
    # = 1. DescribeModelRequest: model = 1.
    seeds += [
        string(1, "01938a7e-9c1b-7c3e-8f00-0123456789ab") + uint(2, 3) + string(3, "nl"),
        string(1, "publisher-user-42") + uint(2, 5000),
        string(1, "publisher-user-42") + string(2, "en"),
        pinned,
        model_ref("caravan-lgbm", "not-a-version"),
        b"",
    ]
    return seeds


# --- tokens -----------------------------------------------------------------

# Must match TOKEN_KEY, API_KEY and EXPIRED_API_KEY in fuzz_targets/tokens.rs.
TOKEN_KEY = b"candor-fuzz token key"
API_KEYS = ["fuzz-api-key", "fuzz-expired-api-key"]

SUBJECT = hashlib.sha256(b"publisher-user-42").hexdigest()
FAR_FUTURE = 4_102_444_800  # 2100-01-01: such a token never expires here
PAST = 1_790_000_000  # 2026-09: long expired


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


def jwt(claims, header=None, key=TOKEN_KEY, alg="sha256"):
    """A JWS in compact form, signed with HMAC (as jsonwebtoken's HS256)."""
    # jsonwebtoken serialises Header with `typ` first, then `alg`.
    header = header or {"typ": "JWT", "alg": "HS256"}
    signing_input = f"{b64url(compact(header))}.{b64url(compact(claims))}"
    mac = hmac.new(key, signing_input.encode(), alg).digest()
    return f"{signing_input}.{b64url(mac)}"


def claims(**override):
    """The claims Tokens::issue writes, in its field order."""
    c = {"iss": "candor", "aud": "candor:subject", "sub": SUBJECT,
         "iat": FAR_FUTURE, "exp": FAR_FUTURE + 3600}
    c.update(override)
    return {k: v for k, v in c.items() if v is not None}


def tokens_seeds():
    valid = jwt(claims())
    head, body, sig = valid.split(".")
    seeds = [
        valid,
        jwt(claims(sub="ref", iat=FAR_FUTURE, exp=FAR_FUTURE + 24 * 3600)),
        jwt(claims(iat=PAST, exp=PAST + 3600)),  # expired
        jwt(claims(exp=FAR_FUTURE + 2 * 24 * 3600)),  # lives too long
        jwt(claims(iat=FAR_FUTURE + 3600, exp=FAR_FUTURE)),  # exp before iat
        jwt(claims(), key=b"another key"),  # bad signature
        jwt(claims(iss="someone-else")),
        jwt(claims(aud="candor:staff")),
        jwt(claims(aud=["candor:subject", "x"])),
        jwt(claims(sub=None)),
        jwt(claims(exp=None)),
        jwt(claims(sub=42)),
        jwt(claims(exp="4102448400")),
        jwt(claims(exp=4102448400.5)),
        jwt(claims(iat=-1)),
        jwt(claims(exp=2**64)),
        jwt(claims(), header={"alg": "HS256"}),
        jwt(claims(), header={"typ": "JWT", "alg": "HS256", "kid": "k1"}),
        jwt(claims(), header={"typ": "JWT", "alg": "HS512"}, alg="sha512"),
        jwt(claims(), header={"typ": "JWT", "alg": "RS256"}),
        f"{b64url(compact({'typ': 'JWT', 'alg': 'none'}))}.{body}.",
        f"{head}.{body}.{sig[:-2]}AA",  # tampered signature
        f"{head}.{body}",
        f"{head}.{body}.{sig}.{sig}",
        f"{head}=.{body}.{sig}",
        f"{head}.{b64url(b'not json')}.{sig}",
        "not.a.token",
        "..",
        *API_KEYS,
        "wrong-api-key",
        "",
    ]
    return [s.encode() for s in seeds]


# --- manifests --------------------------------------------------------------


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def toml_key(k):
    bare = k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k)
    return k if bare else json.dumps(k)


def toml_table(header, table, inline_dicts):
    lines = [header] if header else []
    subtables = []
    for k, v in table.items():
        if isinstance(v, dict) and not inline_dicts:
            subtables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            subtables.append((k, v))
        else:
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
    return lines, subtables


def to_toml(doc):
    """Enough of TOML for a manifest: tables, arrays of tables, inline tables."""
    lines, pending = toml_table(None, doc, inline_dicts=False)
    out = lines
    while pending:
        name, value = pending.pop(0)
        if isinstance(value, dict):
            body, subs = toml_table(f"\n[{name}]", value, inline_dicts=False)
            out += body
            pending[:0] = [(f"{name}.{k}", v) for k, v in subs]
        else:
            for item in value:
                body, _ = toml_table(f"\n[[{name}]]", item, inline_dicts=True)
                out += body
    return "\n".join(out) + "\n"


def few_features(doc, count):
    """The manifest cut down to its first `count` features (and their groups)."""
    doc = json.loads(json.dumps(doc))
    doc["features"] = sorted(doc["features"], key=lambda f: f["position"])[:count]
    keep = {f["name"] for f in doc["features"]}
    groups = []
    for g in doc.get("groups", []):
        g["features"] = [n for n in g["features"] if n in keep]
        if g["features"]:
            groups.append(g)
    doc["groups"] = groups
    doc["metrics"] = doc.get("metrics", [])[:1]
    return doc


def manifests_seeds():
    paths = sorted(root.glob("models/*/*/manifest.toml"))
    paths += sorted(fixtures.glob("packages/*/*/manifest.toml"))
    seeds = [p.read_bytes() for p in paths]

    lgbm = tomllib.loads((root / "models/caravan-lgbm/1.0.0/manifest.toml").read_text())
    small = few_features(lgbm, 3)
    seeds.append(to_toml(small).encode())

    # Every kind of feature and the optional sections the bundled manifests
    # do not use; a non-advertising purpose, so it may use a special category.
    varied = few_features(lgbm, 2)
    del varied["training"]
    varied["model"]["purposes"] = ["measurement", "personalised_content"]
    varied["explanation"] = {"sample_pairs": 64}
    varied["features"] += [
        {"name": "segment", "position": 2, "type": "categorical", "categories": [1, 2, 3],
         "missing_allowed": True, "description": "Customer segment code",
         "category": "first_party_purchase_history", "source": "first_party",
         "reason_group": "your_activity", "reason": {"en": "your segment"}},
        {"name": "page_score", "position": 3, "type": "float", "min": -1.5, "max": 2.5,
         "description": "Relevance of the page", "category": "contextual",
         "source": "request_context", "reason_group": "context"},
        {"name": "faith", "position": 4, "type": "integer", "min": 0, "max": 1,
         "description": "Inferred religion", "category": "income", "proxy_for": "religion",
         "source": "inferred", "reason_group": "advertiser_choice"},
    ]
    varied["groups"].append({"name": "context", "description": "Where the ad shows",
                             "features": ["page_score"]})
    seeds.append(to_toml(varied).encode())

    # The fixture that must be refused: religion proxies serving advertising.
    proxy = tomllib.loads(
        (fixtures / "packages/caravan-religion-proxy/1.0.0/manifest.toml").read_text()
    )
    proxies = [f for f in proxy["features"] if "proxy_for" in f][:2]
    for i, f in enumerate(proxies):
        f["position"] = i
    proxy_small = few_features({**proxy, "features": proxies}, 2)
    seeds.append(to_toml(proxy_small).encode())
    return seeds


# --- writing ----------------------------------------------------------------

TARGETS = {
    "consent_strings": consent_strings_seeds,
    "requests": requests_seeds,
    "tokens": tokens_seeds,
    "manifests": manifests_seeds,
}


def write(target, seeds):
    out = here / "seeds" / target
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    distinct = sorted(set(seeds))
    for data in distinct:
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    size = sum(len(d) for d in distinct)
    print(f"{target}: {len(distinct)} seeds, {size} bytes, in {out}")


def main(argv):
    unknown = [t for t in argv if t not in TARGETS]
    if unknown:
        sys.exit(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    for target in argv or TARGETS:
        write(target, TARGETS[target]())


if __name__ == "__main__":
    main(sys.argv[1:])
