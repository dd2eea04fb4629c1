#!/usr/bin/env node
/**
 * policy.mjs: named, valid consent strings for Candor's end-to-end policy tests.
 *
 * The Rust policy tests send these strings on scoring requests and check the
 * gateway's decision. Our gateway's TCF vendor id in these tests is 1000
 * (VENDOR below). This script writes tests/fixtures/consent/policy_strings.json:
 *
 *   { "generator": { library versions, vendor_id, last_updated, ... },
 *     "strings": { "<name>": { "kind": "tcf" | "gpp", "string": "...", "description": "..." } } }
 *
 * HOW TO RUN
 *   cd tests/consent_vectors && npm ci && node policy.mjs
 *   Deterministic (frozen clock, see lib.mjs). Commit the regenerated JSON.
 *
 * Every TC string (except tcf-stale) is created and last updated at
 * 2026-11-01T00:00:00Z. A policy that rejects consent older than 13 months
 * will treat them as stale from 2027-12-01: before then, change FRESH below to
 * a newer date, rerun and commit.
 *
 * Every string is decoded again by the reference libraries and by the
 * independent bit parser in lib.mjs. The script throws, and writes nothing,
 * if a decoded value differs from the intended one or if one of the
 * per-string policy assertions (for example "vendor 1000 has LI but no
 * consent") does not hold.
 */
import { join } from 'node:path';

import { TCString } from '@iabtechlabtcf/core';
import { GppModel, UsNat, UsCa, TcfEuV2 } from '@iabgpp/cmpapi';
import {
  RealDate, REPO, TCF_VERSION, GPP_VERSION, assert, assertEq, range, uniqSorted, ms, DISCLOSED_VENDORS_CUTOFF_MS,
  analyseTc, tcExpectedFromAnalysis, tcExpectedFromTcfLib, tcExpectedFromGppObj, withoutEncodings, LI_PURPOSES,
  normaliseCase, encodeTcfCase, intendedTc, analyseGpp, USNAT_NAMES, USCA_NAMES, usnat, usca, setUs, intendedUs,
  usFromLib, writeJson,
} from './lib.mjs';

const OUT = join(REPO, 'tests', 'fixtures', 'consent', 'policy_strings.json');
const SCRIPT_REL = 'tests/consent_vectors/policy.mjs';

const VENDOR = 1000;
const OTHERS = [1, 2, 755];
const FRESH = ms(2026, 11, 1); // Created and LastUpdated of every string except tcf-stale
const STALE = ms(2025, 6, 1); // tcf-stale: before the TCF 2.3 cut-off, and > 13 months before FRESH
const STALE_AFTER_MONTHS = 13;
const addMonths = (t, n) => { const d = new RealDate(t); d.setUTCMonth(d.getUTCMonth() + n); return d.getTime(); };
const iso = (t) => new RealDate(t).toISOString().replace('.000Z', 'Z');
const VLV = 150;
const POLICY = 5;
const DISCLOSED = uniqSorted([...OTHERS, 990, VENDOR, 1001, 2000]);
const ALL_PURPOSES = range(1, 11);

assert(FRESH >= DISCLOSED_VENDORS_CUTOFF_MS && STALE < DISCLOSED_VENDORS_CUTOFF_MS, 'dates on the intended sides of the cut-off');
assert(addMonths(STALE, STALE_AFTER_MONTHS) < FRESH, 'tcf-stale is more than 13 months older than the fresh strings');

// ---------------------------------------------------------------------------
// TCF cases (a case is the input of lib.mjs's encodeTcfCase)
// ---------------------------------------------------------------------------
const tcBase = { policy: POLICY, vlv: VLV, lang: 'EN', cc: 'DE', created: FRESH, disclosed: DISCLOSED };
const ALL = {
  ...tcBase, sf: [1, 2], pc: ALL_PURPOSES, pli: LI_PURPOSES,
  vc: [...OTHERS, VENDOR], vli: [...OTHERS, VENDOR],
};
const P2_LI_ONLY = { ...tcBase, sf: [], pc: [], pli: LI_PURPOSES, vc: [], vli: [...OTHERS, VENDOR] };
const RANGE_AROUND_VENDOR = range(990, 1010);

// Each case: the encoder input, a description, and `check(e)`: policy-relevant
// assertions on the decoded values (the shape of tcExpectedFromTcfLib).
const has = (list, id) => list.includes(id);
const restrictionsFor = (e, purpose, vendor) => e.publisher_restrictions
  .filter((r) => r.purpose === purpose && r.vendors.includes(vendor)).map((r) => r.restriction_type);
const tcfCases = {
  'tcf-all': {
    c: ALL,
    description: 'Everything granted: consent for purposes 1-11, LI for 2 and 7-11, vendor 1000 with consent and LI, special features 1 and 2.',
    check: (e) => {
      assertEq(e.purpose_consents, ALL_PURPOSES, 'purpose consents 1-11');
      assertEq(e.purpose_legitimate_interests, LI_PURPOSES, 'LI 2, 7-11');
      assert(has(e.vendor_consents, VENDOR) && has(e.vendor_legitimate_interests, VENDOR), 'vendor consent and LI');
      assertEq(e.special_feature_opt_ins, [1, 2], 'special features');
      assertEq(e.publisher_restrictions, [], 'no restrictions');
    },
  },
  'tcf-no-p3': {
    c: { ...ALL, pc: ALL_PURPOSES.filter((p) => p !== 3) },
    description: 'As tcf-all, but no consent for purpose 3 (create profiles for personalised advertising).',
    check: (e) => {
      assert(!has(e.purpose_consents, 3) && !has(e.purpose_legitimate_interests, 3), 'purpose 3 has no legal basis');
      assertEq(e.purpose_consents, [1, 2, 4, 5, 6, 7, 8, 9, 10, 11], 'other consents kept');
      assert(has(e.vendor_consents, VENDOR), 'vendor consent');
    },
  },
  'tcf-p2-li-only': {
    c: P2_LI_ONLY,
    description: 'No purpose consents at all; LI for purposes 2 and 7-11; vendor 1000 has LI but no consent; no special features.',
    check: (e) => {
      assertEq(e.purpose_consents, [], 'no purpose consents');
      assert(has(e.purpose_legitimate_interests, 2), 'purpose 2 LI');
      assert(!has(e.vendor_consents, VENDOR) && has(e.vendor_legitimate_interests, VENDOR), 'vendor LI only');
    },
  },
  'tcf-p2-consent-only': {
    c: { ...tcBase, sf: [], pc: [2], pli: [], vc: [...OTHERS, VENDOR], vli: [] },
    description: 'Consent for purpose 2 only (not 1, 3 or 4), no purpose LI; vendor 1000 has consent (no LI); no special features.',
    check: (e) => {
      assertEq(e.purpose_consents, [2], 'purpose consents');
      assertEq(e.purpose_legitimate_interests, [], 'no LI');
      assert(has(e.vendor_consents, VENDOR) && !has(e.vendor_legitimate_interests, VENDOR), 'vendor consent only');
    },
  },
  'tcf-nothing': {
    c: { ...tcBase, sf: [], pc: [], pli: [], vc: [], vli: [] },
    description: 'Reject all: no purpose consents or LI, no special features, no vendor consents or LI (vendor 1000 is only listed in DisclosedVendors).',
    check: (e) => {
      for (const k of ['purpose_consents', 'purpose_legitimate_interests', 'special_feature_opt_ins', 'vendor_consents', 'vendor_legitimate_interests']) {
        assertEq(e[k], [], k);
      }
    },
  },
  'tcf-vendor-missing': {
    c: { ...ALL, vc: OTHERS, vli: OTHERS },
    description: 'Purposes and special features as tcf-all, but vendor 1000 has neither consent nor LI (vendors 1, 2 and 755 have both; 1000 is listed in DisclosedVendors).',
    check: (e) => {
      assertEq(e.purpose_consents, ALL_PURPOSES, 'purpose consents 1-11');
      assert(!has(e.vendor_consents, VENDOR) && !has(e.vendor_legitimate_interests, VENDOR), 'vendor absent');
      assertEq(e.vendor_consents, OTHERS, 'other vendors present');
    },
  },
  'tcf-restrict-p3-not-allowed': {
    c: { ...ALL, restrictions: [{ purpose: 3, type: 0, vendors: RANGE_AROUND_VENDOR }] },
    description: 'As tcf-all, plus a publisher restriction: purpose 3, type 0 (not allowed) for vendors 990-1010.',
    check: (e) => {
      assertEq(restrictionsFor(e, 3, VENDOR), [0], 'purpose 3 not allowed for the vendor');
      assert(has(e.purpose_consents, 3) && has(e.vendor_consents, VENDOR), 'consent bits still set');
    },
  },
  'tcf-restrict-p2-require-consent': {
    c: { ...P2_LI_ONLY, restrictions: [{ purpose: 2, type: 1, vendors: RANGE_AROUND_VENDOR }] },
    description: 'As tcf-p2-li-only (purpose 2 by LI only, vendor 1000 LI only), plus a publisher restriction: purpose 2, type 1 (require consent) for vendors 990-1010. Purpose 2 is therefore not permitted.',
    check: (e) => {
      assertEq(restrictionsFor(e, 2, VENDOR), [1], 'purpose 2 requires consent for the vendor');
      assert(!has(e.purpose_consents, 2) && has(e.purpose_legitimate_interests, 2), 'purpose 2 LI only');
      assert(!has(e.vendor_consents, VENDOR) && has(e.vendor_legitimate_interests, VENDOR), 'vendor LI only');
    },
  },
  'tcf-no-sf1': {
    c: { ...ALL, sf: [2] },
    description: 'As tcf-all, but special feature 1 (precise geolocation) not opted in; special feature 2 opted in.',
    check: (e) => {
      assertEq(e.special_feature_opt_ins, [2], 'special features');
      assertEq(e.purpose_consents, ALL_PURPOSES, 'purpose consents 1-11');
    },
  },
  'tcf-stale': {
    c: { ...ALL, created: STALE },
    description: `As tcf-all, but created and last updated ${iso(STALE)} (older than ${STALE_AFTER_MONTHS} months). Created before the TCF 2.3 cut-off 2026-02-28; it carries DisclosedVendors anyway.`,
    check: (e) => {
      assertEq([e.created_ms, e.last_updated_ms], [STALE, STALE], 'stale dates');
      assertEq(e.purpose_consents, ALL_PURPOSES, 'purpose consents 1-11');
    },
  },
};

// Checks that every TC string of this file must pass (decoded values, shape of tcExpectedFromTcfLib).
function checkCommonTc(name, e, c) {
  const when = c.created;
  assertEq([e.created_ms, e.last_updated_ms], [when, when], `${name}: Created and LastUpdated`);
  assert(when % 100 === 0, `${name}: whole deciseconds`);
  assertEq(e.version, 2, `${name}: Version`);
  assertEq(e.policy_version, POLICY, `${name}: TcfPolicyVersion`);
  assertEq(e.vendor_list_version, VLV, `${name}: VendorListVersion`);
  assertEq(e.consent_language, 'EN', `${name}: ConsentLanguage`);
  assertEq(e.publisher_cc, 'DE', `${name}: PublisherCC`);
  assertEq(e.is_service_specific, true, `${name}: IsServiceSpecific`);
  assertEq(e.purpose_one_treatment, false, `${name}: PurposeOneTreatment`);
  assert(e.disclosed_vendors !== null && e.disclosed_vendors.includes(VENDOR), `${name}: DisclosedVendors includes ${VENDOR}`);
  assertEq(e.disclosed_vendors, DISCLOSED, `${name}: DisclosedVendors`);
  for (const v of [...e.vendor_consents, ...e.vendor_legitimate_interests]) assert(e.disclosed_vendors.includes(v), `${name}: vendor ${v} is disclosed`);
  for (const p of [1, 3, 4, 5, 6]) assert(!e.purpose_legitimate_interests.includes(p), `${name}: no LI for purpose ${p}`);
}

const strings = {};
const tcStrings = new Map();
const fmtIds = (ids) => {
  if (ids.length === 0) return 'none';
  const parts = [];
  for (let i = 0; i < ids.length;) {
    let j = i;
    while (j + 1 < ids.length && ids[j + 1] === ids[j] + 1) j++;
    parts.push(j - i >= 2 ? `${ids[i]}-${ids[j]}` : ids.slice(i, j + 1).join(','));
    i = j + 1;
  }
  return parts.join(',');
};
const summariseTc = (e) => [
  `created ${iso(e.created_ms)}`, `policy ${e.policy_version}`, `VLV ${e.vendor_list_version}`,
  `purpose consents ${fmtIds(e.purpose_consents)}`, `purpose LI ${fmtIds(e.purpose_legitimate_interests)}`,
  `special features ${fmtIds(e.special_feature_opt_ins)}`,
  `vendor consents ${fmtIds(e.vendor_consents)}`, `vendor LI ${fmtIds(e.vendor_legitimate_interests)}`,
  `restrictions ${e.publisher_restrictions.length ? e.publisher_restrictions.map((r) => `P${r.purpose} type ${r.restriction_type} vendors ${fmtIds(r.vendors)}`).join('; ') : 'none'}`,
  `disclosed vendors ${e.disclosed_vendors === null ? 'absent' : fmtIds(e.disclosed_vendors)}`,
].join('; ');

for (const [name, { c: raw, description, check }] of Object.entries(tcfCases)) {
  const c = normaliseCase({ name, ...raw });
  const str = encodeTcfCase(c);
  const fromLib = tcExpectedFromTcfLib(str);
  assertEq(fromLib, intendedTc(c), `${name}: TCString.decode() differs from the intended consent state`);
  const a = analyseTc(str);
  assertEq(a.defects, [], `${name}: the strict parser finds defects`);
  assertEq(withoutEncodings(tcExpectedFromAnalysis(a)), fromLib, `${name}: our bit parser disagrees with TCString.decode()`);
  assertEq(str.split('.').length, 2, `${name}: core and DisclosedVendors segments only`);
  checkCommonTc(name, fromLib, c);
  check(fromLib);
  tcStrings.set(name, { string: str, case: c });
  strings[name] = { kind: 'tcf', string: str, description: `${description} [${summariseTc(fromLib)}]` };
}

// ---------------------------------------------------------------------------
// GPP cases (encoded by @iabgpp/cmpapi)
// ---------------------------------------------------------------------------
// Category numbers below are 1-based, as in the GPP specs; the arrays are 0-based.
const USNAT_GEO = 8; // usnat SensitiveDataProcessing (8): precise geolocation
const USCA_GEO = 3; // usca SensitiveDataProcessing (3): precise geolocation
const withAt = (arr, oneBased, v) => arr.map((x, i) => (i === oneBased - 1 ? v : x));

const USNAT_NONE = usnat({
  SharingNotice: 1, SaleOptOutNotice: 1, SharingOptOutNotice: 1, TargetedAdvertisingOptOutNotice: 1,
  SensitiveDataProcessingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1,
  SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 2,
  SensitiveDataProcessing: withAt(Array(16).fill(0), USNAT_GEO, 1), KnownChildSensitiveDataConsents: [0, 0, 0],
  PersonalDataConsents: 0, MspaCoveredTransaction: 2, MspaOptOutOptionMode: 0, MspaServiceProviderMode: 0, Gpc: false,
});
const USCA_NONE = usca({
  SaleOptOutNotice: 1, SharingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1, SaleOptOut: 2, SharingOptOut: 2,
  SensitiveDataProcessing: Array(9).fill(2), KnownChildSensitiveDataConsents: [0, 0], PersonalDataConsents: 0,
  MspaCoveredTransaction: 2, MspaOptOutOptionMode: 0, MspaServiceProviderMode: 0, Gpc: false,
});
const USNAT_NONE_TEXT = 'usnat v2: all notices given (1); SaleOptOut, SharingOptOut and TargetedAdvertisingOptOut 2 (did not opt out); '
  + `SensitiveDataProcessing all 0 (not applicable) except category ${USNAT_GEO} (precise geolocation) = 1 (no consent); `
  + 'KnownChildSensitiveDataConsents [0,0,0]; PersonalDataConsents 0; MspaCoveredTransaction 2 (no); Mspa modes 0; GPC subsection present, Gpc false';
const USCA_NONE_TEXT = 'usca v1: all notices given (1); SaleOptOut and SharingOptOut 2 (did not opt out); SensitiveDataProcessing all 2 (did not opt out); '
  + 'KnownChildSensitiveDataConsents [0,0]; PersonalDataConsents 0; MspaCoveredTransaction 2 (no); Mspa modes 0; GPC subsection present, Gpc false';

const gppCases = {
  'gpp-tcfeuv2-all': {
    tcfEmbed: 'tcf-all',
    description: 'GPP string with only the tcfeuv2 section, carrying the tcf-all TC string (core and DisclosedVendors copied verbatim; the GPP library appends an empty PublisherTC segment).',
    check: (o) => {
      assertEq(o.tcfeuv2.purpose_consents, ALL_PURPOSES, 'purpose consents');
      assert(o.tcfeuv2.vendor_consents.includes(VENDOR), 'vendor consent');
    },
  },
  'gpp-usnat-none': {
    usnat: USNAT_NONE,
    description: `Only usnat, nothing opted out. ${USNAT_NONE_TEXT}.`,
    check: (o) => {
      assertEq([o.usnat.SaleOptOut, o.usnat.SharingOptOut, o.usnat.TargetedAdvertisingOptOut], [2, 2, 2], 'no opt-outs');
      assertEq(o.usnat.SensitiveDataProcessing[USNAT_GEO - 1], 1, 'no consent for precise geolocation');
      assertEq(o.usnat.Gpc, false, 'Gpc');
    },
  },
  'gpp-usnat-geo-consent': {
    usnat: { ...USNAT_NONE, SensitiveDataProcessing: withAt(USNAT_NONE.SensitiveDataProcessing, USNAT_GEO, 2) },
    description: `As gpp-usnat-none, but SensitiveDataProcessing category ${USNAT_GEO} (precise geolocation) = 2 (consent).`,
    check: (o) => assertEq(o.usnat.SensitiveDataProcessing, withAt(Array(16).fill(0), USNAT_GEO, 2), 'geolocation consent'),
  },
  'gpp-usnat-sale-opt-out': {
    usnat: { ...USNAT_NONE, SaleOptOut: 1 },
    description: 'As gpp-usnat-none, but SaleOptOut = 1 (opted out of the sale of personal data).',
    check: (o) => assertEq([o.usnat.SaleOptOut, o.usnat.SharingOptOut, o.usnat.TargetedAdvertisingOptOut], [1, 2, 2], 'sale opt-out'),
  },
  'gpp-usnat-targeted-opt-out': {
    usnat: { ...USNAT_NONE, TargetedAdvertisingOptOut: 1 },
    description: 'As gpp-usnat-none, but TargetedAdvertisingOptOut = 1 (opted out of targeted advertising).',
    check: (o) => assertEq([o.usnat.SaleOptOut, o.usnat.SharingOptOut, o.usnat.TargetedAdvertisingOptOut], [2, 2, 1], 'targeted advertising opt-out'),
  },
  'gpp-usnat-known-child': {
    usnat: { ...USNAT_NONE, KnownChildSensitiveDataConsents: [1, 1, 0] },
    description: 'As gpp-usnat-none, but KnownChildSensitiveDataConsents = [1, 1, 0] (known child, no consent).',
    check: (o) => assertEq(o.usnat.KnownChildSensitiveDataConsents, [1, 1, 0], 'known child'),
  },
  'gpp-usnat-gpc': {
    usnat: { ...USNAT_NONE, Gpc: true },
    description: 'As gpp-usnat-none, but the GPC subsection has Gpc = true (Global Privacy Control signal).',
    check: (o) => assertEq(o.usnat.Gpc, true, 'Gpc'),
  },
  'gpp-usca-none': {
    usca: USCA_NONE,
    description: `Only usca, nothing opted out. ${USCA_NONE_TEXT}.`,
    check: (o) => {
      assertEq([o.usca.SaleOptOut, o.usca.SharingOptOut], [2, 2], 'no opt-outs');
      assertEq(o.usca.SensitiveDataProcessing, Array(9).fill(2), 'no sensitive data opt-outs');
    },
  },
  'gpp-usca-sale-opt-out': {
    usca: { ...USCA_NONE, SaleOptOut: 1 },
    description: 'As gpp-usca-none, but SaleOptOut = 1 (opted out of the sale of personal information).',
    check: (o) => assertEq([o.usca.SaleOptOut, o.usca.SharingOptOut], [1, 2], 'sale opt-out'),
  },
  'gpp-usca-geo-opt-out': {
    usca: { ...USCA_NONE, SensitiveDataProcessing: withAt(USCA_NONE.SensitiveDataProcessing, USCA_GEO, 1) },
    description: `As gpp-usca-none, but SensitiveDataProcessing category ${USCA_GEO} (precise geolocation) = 1 (opted out / limit use).`,
    check: (o) => assertEq(o.usca.SensitiveDataProcessing, [2, 2, 1, 2, 2, 2, 2, 2, 2], 'geolocation opt-out'),
  },
  'gpp-usnat-usca-none': {
    usnat: USNAT_NONE,
    usca: USCA_NONE,
    description: `usnat and usca sections, as in gpp-usnat-none and gpp-usca-none. usnat: ${USNAT_NONE_TEXT}. usca: ${USCA_NONE_TEXT}.`,
    check: (o) => {
      assertEq(o.usnat.SaleOptOut, 2, 'usnat SaleOptOut');
      assertEq(o.usca.SaleOptOut, 2, 'usca SaleOptOut');
    },
  },
};

for (const [name, c] of Object.entries(gppCases)) {
  const g = new GppModel();
  let intendedTcf = null;
  if (c.tcfEmbed) {
    const base = tcStrings.get(c.tcfEmbed);
    g.decodeSection(TcfEuV2.NAME, base.string);
    intendedTcf = intendedTc(base.case, { gppAlwaysSegments: true });
  }
  if (c.usnat) setUs(g, UsNat.NAME, USNAT_NAMES, c.usnat);
  if (c.usca) setUs(g, UsCa.NAME, USCA_NAMES, c.usca);
  const str = g.encode();

  const d = new GppModel(str);
  const obj = d.toObject(); // forces every section to be decoded
  const sectionIds = d.getSectionIds();
  const intendedIds = [...(c.tcfEmbed ? [2] : []), ...(c.usnat ? [7] : []), ...(c.usca ? [8] : [])];
  assertEq(sectionIds, intendedIds, `${name}: section ids`);
  const analysis = analyseGpp(str);
  assertEq(analysis.defects, [], `${name}: our strict GPP parser finds defects`);
  assertEq(analysis.header.ids, sectionIds, `${name}: our header parser disagrees with the library`);
  const sections = str.split('~').slice(1);
  const decoded = {};
  if (intendedTcf) {
    const sec = sections[sectionIds.indexOf(2)];
    const fromGpp = tcExpectedFromGppObj(obj.tcfeuv2, sec);
    assertEq(fromGpp, intendedTcf, `${name}: tcfeuv2 decoded by @iabgpp/cmpapi differs from the intended state`);
    const fromTcf = tcExpectedFromTcfLib(sec);
    assertEq(fromTcf, fromGpp, `${name}: @iabtechlabtcf/core decodes the tcfeuv2 section differently`);
    const mine = tcExpectedFromAnalysis(analysis.sections.find((s) => s.id === 2).analysis);
    assertEq(withoutEncodings(mine), fromGpp, `${name}: our bit parser disagrees on the tcfeuv2 section`);
    const orig = tcStrings.get(c.tcfEmbed).string;
    assertEq(sec, `${orig}.YAAAAAAAAAAA`, `${name}: the tcfeuv2 section is the ${c.tcfEmbed} string plus an empty PublisherTC`);
    checkCommonTc(name, fromTcf, tcStrings.get(c.tcfEmbed).case);
    const { publisher_tc: pub, ...rest } = fromTcf;
    assertEq(rest, withoutKey(tcExpectedFromTcfLib(orig), 'publisher_tc'), `${name}: same consent state as ${c.tcfEmbed}`);
    decoded.tcfeuv2 = fromTcf;
  }
  for (const [key, id, names, spec] of [['usnat', 7, USNAT_NAMES, c.usnat], ['usca', 8, USCA_NAMES, c.usca]]) {
    if (!spec) continue;
    const fromLib = usFromLib(d, key, names);
    assertEq(fromLib, intendedUs(spec, names), `${name}: ${key} decoded by @iabgpp/cmpapi differs from the intended values`);
    assertEq(analysis.sections.find((s) => s.id === id).parsed.values, fromLib, `${name}: our ${key} parser disagrees with the library`);
    // common to every US section in this file
    assertEq(fromLib.Version, key === 'usnat' ? 2 : 1, `${name}: ${key} Version`);
    assertEq([fromLib.MspaCoveredTransaction, fromLib.MspaOptOutOptionMode, fromLib.MspaServiceProviderMode], [2, 0, 0], `${name}: ${key} MSPA fields`);
    assertEq(fromLib.PersonalDataConsents, 0, `${name}: ${key} PersonalDataConsents`);
    assert('Gpc' in fromLib, `${name}: ${key} GPC subsection present`);
    decoded[key] = fromLib;
  }
  c.check(decoded);
  strings[name] = { kind: 'gpp', string: str, description: c.description };
}
function withoutKey(o, k) { const { [k]: _, ...rest } = o; return rest; }

// ---------------------------------------------------------------------------
// Completeness, then write the file
// ---------------------------------------------------------------------------
const NAMES = [
  'tcf-all', 'tcf-no-p3', 'tcf-p2-li-only', 'tcf-p2-consent-only', 'tcf-nothing', 'tcf-vendor-missing',
  'tcf-restrict-p3-not-allowed', 'tcf-restrict-p2-require-consent', 'tcf-no-sf1', 'tcf-stale',
  'gpp-tcfeuv2-all', 'gpp-usnat-none', 'gpp-usnat-geo-consent', 'gpp-usnat-sale-opt-out', 'gpp-usnat-targeted-opt-out',
  'gpp-usnat-known-child', 'gpp-usnat-gpc', 'gpp-usca-none', 'gpp-usca-sale-opt-out', 'gpp-usca-geo-opt-out', 'gpp-usnat-usca-none',
];
assertEq(Object.keys(strings), NAMES, 'the required strings, in order');
const all = Object.values(strings).map((s) => s.string);
assertEq(all.length, new Set(all).size, 'strings are unique');
// a sanity check that the GPP library did not stamp anything with the frozen clock (2020-01-01)
for (const s of all) if (s.startsWith('C')) assert(TCString.decode(s).created.getTime() !== RealDate.UTC(2020, 0, 1), 'not the frozen clock');

const ordered = {
  generator: {
    tcf_core: TCF_VERSION,
    gpp_cmpapi: GPP_VERSION,
    script: SCRIPT_REL,
    vendor_id: VENDOR,
    last_updated: iso(FRESH),
    stale_from: iso(addMonths(FRESH, STALE_AFTER_MONTHS)),
    tcf: {
      policy_version: POLICY, vendor_list_version: VLV, consent_language: 'EN', publisher_cc: 'DE',
      is_service_specific: true, cmp_id: 10, cmp_version: 2, consent_screen: 1, disclosed_vendors: DISCLOSED,
    },
    notes: [
      `Every TC string is created and last updated at last_updated, except tcf-stale (${iso(STALE)}). Each one carries a DisclosedVendors segment (TCF 2.3) listing vendor ${VENDOR}, also where vendor ${VENDOR} has neither consent nor LI.`,
      `The strings count as stale (older than ${STALE_AFTER_MONTHS} months) from stale_from: regenerate them with a newer date before then.`,
      'The TC strings were encoded by @iabtechlabtcf/core with a synthetic GVL (vendors 1-3000), the GPP strings by @iabgpp/cmpapi; each was decoded again by both the library and an independent bit parser.',
      'GPP sensitive-data category numbers in descriptions are 1-based, as in the GPP specs.',
    ],
  },
  strings,
};
writeJson(OUT, ordered);
console.log(`wrote ${OUT}: ${Object.keys(strings).length} strings`);
