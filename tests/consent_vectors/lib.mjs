/**
 * lib.mjs: helpers shared by generate.mjs (golden decoder vectors) and
 * policy.mjs (named strings for end-to-end policy tests).
 *
 * Importing this module installs the determinism guards: a frozen clock
 * (new Date() and Date.now() return 2020-01-01T00:00:00Z) and a Math.random
 * that throws. It also checks that the installed library versions equal the
 * pinned ones, and that the usnat/usca field layouts of @iabgpp/cmpapi match
 * the hand-written layouts below.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { TCModel, TCString, GVL, PurposeRestriction } from '@iabtechlabtcf/core';
import {
  RangeEntry,
  UsNatCoreSegment, UsNatGpcSegment, UsCaCoreSegment, UsCaGpcSegment,
  USNAT_CORE_SEGMENT_FIELD_NAMES, USNAT_GPC_SEGMENT_FIELD_NAMES,
  USCA_CORE_SEGMENT_FIELD_NAMES, USCA_GPC_SEGMENT_FIELD_NAMES,
  UsNat, UsCa, TcfEuV2,
} from '@iabgpp/cmpapi';

// ---------------------------------------------------------------------------
// Determinism guards
// ---------------------------------------------------------------------------
export const RealDate = Date;
export const FROZEN_NOW_MS = RealDate.UTC(2020, 0, 1); // never used by any vector on purpose
export class FrozenDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(FROZEN_NOW_MS);
    else super(...args);
  }
  static now() { return FROZEN_NOW_MS; }
}
globalThis.Date = FrozenDate;
Math.random = () => { throw new Error('Math.random() must not be used: use the seeded PRNG'); };

export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// Paths and versions
// ---------------------------------------------------------------------------
export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..');
const PINNED = JSON.parse(readFileSync(join(HERE, 'package.json'), 'utf8')).dependencies;
const installed = (pkg) => JSON.parse(readFileSync(join(HERE, 'node_modules', ...pkg.split('/'), 'package.json'), 'utf8')).version;
export const TCF_VERSION = installed('@iabtechlabtcf/core');
export const GPP_VERSION = installed('@iabgpp/cmpapi');
assert(TCF_VERSION === PINNED['@iabtechlabtcf/core'], `installed @iabtechlabtcf/core ${TCF_VERSION} != pinned ${PINNED['@iabtechlabtcf/core']}`);
assert(GPP_VERSION === PINNED['@iabgpp/cmpapi'], `installed @iabgpp/cmpapi ${GPP_VERSION} != pinned ${PINNED['@iabgpp/cmpapi']}`);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------
export function assert(cond, msg) {
  if (!cond) throw new Error('ASSERTION FAILED: ' + msg);
}
export function assertEq(actual, expected, msg) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(`ASSERTION FAILED: ${msg}\n  actual:   ${JSON.stringify(actual)}\n  expected: ${JSON.stringify(expected)}`);
  }
}
export const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
export const uniqSorted = (xs) => [...new Set(xs)].sort((a, b) => a - b);
export const ms = (y, mo, d, h = 0, mi = 0, s = 0, milli = 0) => RealDate.UTC(y, mo - 1, d, h, mi, s, milli);
export const decisecondMs = (t) => Math.round(t / 100) * 100; // what a 36-bit decisecond field holds

// TCF v2.3: a TC string created on or after this instant must carry DisclosedVendors.
export const DISCLOSED_VENDORS_CUTOFF_MS = ms(2026, 2, 28);

// ---------------------------------------------------------------------------
// Bit-level helper (base64url <-> bit strings), independent of both libraries
// ---------------------------------------------------------------------------
export const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
export const B64_RE = /^[A-Za-z0-9_-]+$/;
export function b64ToBits(s) {
  if (!B64_RE.test(s)) throw new Error(`not base64url: ${JSON.stringify(s)}`);
  let out = '';
  for (const c of s) out += B64.indexOf(c).toString(2).padStart(6, '0');
  return out;
}
export function bitsToB64(bits) {
  assert(bits.length % 6 === 0, 'bit string length must be a multiple of 6');
  let out = '';
  for (let i = 0; i < bits.length; i += 6) out += B64[parseInt(bits.slice(i, i + 6), 2)];
  return out;
}
export function intToBits(v, n) {
  assert(Number.isInteger(v) && v >= 0 && v < 2 ** n, `value ${v} does not fit in ${n} bits`);
  return n === 0 ? '' : v.toString(2).padStart(n, '0');
}
export function writeBits(bits, off, n, v) {
  assert(off + n <= bits.length, 'write past end');
  return bits.slice(0, off) + intToBits(v, n) + bits.slice(off + n);
}
export function diffPositions(a, b) {
  assert(a.length === b.length, 'diff of bit strings of different lengths');
  const out = [];
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

export class Truncated extends Error {}
export class BitReader {
  constructor(bits) { this.bits = bits; this.pos = 0; }
  raw(n) {
    if (this.pos + n > this.bits.length) throw new Truncated(`need ${n} bits at ${this.pos}, have ${this.bits.length}`);
    const s = this.bits.slice(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  int(n) { const s = this.raw(n); return n === 0 ? 0 : parseInt(s, 2); }
  // read a named field and remember where it was
  field(fields, name, n) {
    const off = this.pos;
    const raw = this.raw(n);
    const value = n === 0 ? 0 : parseInt(raw, 2);
    fields[name] = { off, len: n, value, raw };
    return value;
  }
}
export const idsOfBitfield = (raw) => [...raw].flatMap((b, i) => (b === '1' ? [i + 1] : []));
export const sixBitLetters = (v) => String.fromCharCode(65 + (v >> 6)) + String.fromCharCode(65 + (v & 63));

// ---------------------------------------------------------------------------
// Independent strict TC string parser / validator.
// Returns every defect found (it goes on parsing after a semantic defect, so
// that we can prove that a mutated string has exactly one defect).
// ---------------------------------------------------------------------------
export function parseRangeEntries(r, f, prefix, n, maxId, defects) {
  const entries = [];
  const ids = [];
  for (let j = 0; j < n; j++) {
    const p = `${prefix}.entries[${j}]`;
    const isRange = r.field(f, `${p}.isRange`, 1);
    const start = r.field(f, `${p}.start`, 16);
    const end = isRange ? r.field(f, `${p}.end`, 16) : start;
    entries.push({ isRange: !!isRange, start, end });
    if (start === 0) defects.add('range');
    if (end < start) defects.add('range');
    else {
      if (maxId !== null && end > maxId) defects.add('max_vendor_id');
      for (let k = start; k <= end; k++) ids.push(k);
    }
  }
  return { entries, ids: uniqSorted(ids) };
}
export function parseVendorSection(r, f, prefix, defects) {
  const maxId = r.field(f, `${prefix}.maxId`, 16);
  const isRange = r.field(f, `${prefix}.isRange`, 1);
  if (!isRange) {
    r.field(f, `${prefix}.bitfield`, maxId);
    return { encoding: 'bitfield', maxId, entries: [], ids: idsOfBitfield(f[`${prefix}.bitfield`].raw) };
  }
  const n = r.field(f, `${prefix}.numEntries`, 12);
  const { entries, ids } = parseRangeEntries(r, f, prefix, n, maxId, defects);
  return { encoding: 'range', maxId, entries, ids };
}
export function parseCore(seg, defects) {
  const bits = b64ToBits(seg);
  const r = new BitReader(bits);
  const f = {};
  const core = { type: 0, bits, fields: f };
  try {
    if (r.field(f, 'version', 6) !== 2) defects.add('version');
    r.field(f, 'created', 36);
    r.field(f, 'lastUpdated', 36);
    r.field(f, 'cmpId', 12);
    r.field(f, 'cmpVersion', 12);
    r.field(f, 'consentScreen', 6);
    r.field(f, 'consentLanguage', 12);
    r.field(f, 'vendorListVersion', 12);
    if (r.field(f, 'policyVersion', 6) < 4) defects.add('policy_version');
    if (r.field(f, 'isServiceSpecific', 1) !== 1) defects.add('is_service_specific');
    r.field(f, 'useNonStandardTexts', 1);
    r.field(f, 'specialFeatureOptIns', 12);
    r.field(f, 'purposeConsents', 24);
    r.field(f, 'purposeLegitimateInterests', 24);
    for (const p of [1, 3, 4, 5, 6]) if (f.purposeLegitimateInterests.raw[p - 1] === '1') defects.add('li_purpose');
    r.field(f, 'purposeOneTreatment', 1);
    r.field(f, 'publisherCC', 12);
    core.vendorConsents = parseVendorSection(r, f, 'vendorConsents', defects);
    core.vendorLegitimateInterests = parseVendorSection(r, f, 'vendorLegitimateInterests', defects);
    const num = r.field(f, 'pubRestrictions.num', 12);
    core.restrictions = [];
    for (let i = 0; i < num; i++) {
      const p = `pubRestrictions[${i}]`;
      const purpose = r.field(f, `${p}.purposeId`, 6);
      const type = r.field(f, `${p}.restrictionType`, 2);
      if (type === 3) defects.add('restriction_type');
      const n = r.field(f, `${p}.numEntries`, 12);
      const { entries, ids } = parseRangeEntries(r, f, p, n, null, defects);
      core.restrictions.push({ purpose, type, entries, vendors: ids });
    }
    core.endBit = r.pos;
  } catch (e) {
    if (!(e instanceof Truncated)) throw e;
    defects.add('truncated');
    core.truncated = true;
  }
  return core;
}
export function analyseTc(str) {
  const defects = new Set();
  const result = { segments: [] };
  if (str === '') { defects.add('empty'); return { ...result, defects: [...defects] }; }
  const parts = str.split('.');
  if (parts.some((p) => !B64_RE.test(p))) { defects.add('base64'); return { ...result, defects: [...defects] }; }
  result.core = parseCore(parts[0], defects);
  result.segments.push(result.core);
  const seen = new Set();
  for (let i = 1; i < parts.length; i++) {
    const bits = b64ToBits(parts[i]);
    const r = new BitReader(bits);
    const f = {};
    const seg = { bits, fields: f };
    result.segments.push(seg);
    try {
      seg.type = r.field(f, 'segmentType', 3);
      if (![1, 2, 3].includes(seg.type)) { defects.add('segment_type'); continue; }
      if (seen.has(seg.type)) defects.add('duplicate_segment');
      seen.add(seg.type);
      if (seg.type === 1 || seg.type === 2) {
        seg.vendors = parseVendorSection(r, f, 'vendors', defects);
      } else {
        r.field(f, 'pubPurposeConsents', 24);
        r.field(f, 'pubPurposeLegitimateInterests', 24);
        const n = r.field(f, 'numCustomPurposes', 6);
        r.field(f, 'customPurposeConsents', n);
        r.field(f, 'customPurposeLegitimateInterests', n);
      }
    } catch (e) {
      if (!(e instanceof Truncated)) throw e;
      defects.add('truncated');
    }
  }
  const created = result.core.fields.created;
  if (created && created.value * 100 >= DISCLOSED_VENDORS_CUTOFF_MS && !seen.has(1)) defects.add('disclosed_vendors');
  return { ...result, defects: [...defects].sort() };
}

// Expected-object shape shared by "tcf" entries and the "tcfeuv2" part of "gpp" entries.
export function sortRestrictions(list) {
  return list
    .map((x) => ({ purpose: x.purpose, restriction_type: x.restriction_type, vendors: uniqSorted(x.vendors) }))
    .sort((a, b) => a.purpose - b.purpose || a.restriction_type - b.restriction_type);
}
export function tcExpectedFromAnalysis(a) {
  const f = a.core.fields;
  const seg = (t) => a.segments.slice(1).find((s) => s.type === t);
  const dv = seg(1);
  const pub = seg(3);
  return {
    version: f.version.value,
    created_ms: f.created.value * 100,
    last_updated_ms: f.lastUpdated.value * 100,
    cmp_id: f.cmpId.value,
    cmp_version: f.cmpVersion.value,
    consent_screen: f.consentScreen.value,
    consent_language: sixBitLetters(f.consentLanguage.value),
    vendor_list_version: f.vendorListVersion.value,
    policy_version: f.policyVersion.value,
    is_service_specific: f.isServiceSpecific.value === 1,
    use_non_standard_texts: f.useNonStandardTexts.value === 1,
    special_feature_opt_ins: idsOfBitfield(f.specialFeatureOptIns.raw),
    purpose_consents: idsOfBitfield(f.purposeConsents.raw),
    purpose_legitimate_interests: idsOfBitfield(f.purposeLegitimateInterests.raw),
    purpose_one_treatment: f.purposeOneTreatment.value === 1,
    publisher_cc: sixBitLetters(f.publisherCC.value),
    vendor_consents: a.core.vendorConsents.ids,
    vendor_legitimate_interests: a.core.vendorLegitimateInterests.ids,
    publisher_restrictions: sortRestrictions(a.core.restrictions.map((r) => ({ purpose: r.purpose, restriction_type: r.type, vendors: r.vendors }))),
    disclosed_vendors: dv ? dv.vendors.ids : null,
    publisher_tc: pub ? {
      purpose_consents: idsOfBitfield(pub.fields.pubPurposeConsents.raw),
      purpose_legitimate_interests: idsOfBitfield(pub.fields.pubPurposeLegitimateInterests.raw),
      num_custom_purposes: pub.fields.numCustomPurposes.value,
      custom_purpose_consents: idsOfBitfield(pub.fields.customPurposeConsents.raw),
      custom_purpose_legitimate_interests: idsOfBitfield(pub.fields.customPurposeLegitimateInterests.raw),
    } : null,
    encodings: {
      vendor_consents: a.core.vendorConsents.encoding,
      vendor_legitimate_interests: a.core.vendorLegitimateInterests.encoding,
      disclosed_vendors: dv ? dv.vendors.encoding : null,
    },
  };
}
export const segmentTypesOf = (str) => str.split('.').slice(1).map((s) => parseInt(b64ToBits(s).slice(0, 3), 2));

// Decode with @iabtechlabtcf/core (the reference) into the expected shape.
export function tcExpectedFromTcfLib(str) {
  const m = TCString.decode(str);
  const ids = (vec) => { const out = []; vec.forEach((v, id) => { if (v) out.push(id); }); return out; };
  const types = segmentTypesOf(str);
  const pr = m.publisherRestrictions;
  return {
    version: m.version,
    created_ms: m.created.getTime(),
    last_updated_ms: m.lastUpdated.getTime(),
    cmp_id: m.cmpId,
    cmp_version: m.cmpVersion,
    consent_screen: m.consentScreen,
    consent_language: m.consentLanguage,
    vendor_list_version: m.vendorListVersion,
    policy_version: m.policyVersion,
    is_service_specific: m.isServiceSpecific,
    use_non_standard_texts: m.useNonStandardTexts,
    special_feature_opt_ins: ids(m.specialFeatureOptins),
    purpose_consents: ids(m.purposeConsents),
    purpose_legitimate_interests: ids(m.purposeLegitimateInterests),
    purpose_one_treatment: m.purposeOneTreatment,
    publisher_cc: m.publisherCountryCode,
    vendor_consents: ids(m.vendorConsents),
    vendor_legitimate_interests: ids(m.vendorLegitimateInterests),
    publisher_restrictions: sortRestrictions(pr.getRestrictions().map((x) => ({ purpose: x.purposeId, restriction_type: x.restrictionType, vendors: pr.getVendors(x) }))),
    disclosed_vendors: types.includes(1) ? ids(m.vendorsDisclosed) : null,
    publisher_tc: types.includes(3) ? {
      purpose_consents: ids(m.publisherConsents),
      purpose_legitimate_interests: ids(m.publisherLegitimateInterests),
      num_custom_purposes: m.numCustomPurposes,
      custom_purpose_consents: ids(m.publisherCustomConsents),
      custom_purpose_legitimate_interests: ids(m.publisherCustomLegitimateInterests),
    } : null,
  };
}

// Decode a tcfeuv2 section object from @iabgpp/cmpapi into the expected shape.
export function tcExpectedFromGppObj(o, sectionStr) {
  const ids = (bools) => bools.flatMap((b, i) => (b ? [i + 1] : []));
  const types = segmentTypesOf(sectionStr);
  return {
    version: o.Version,
    created_ms: o.Created.getTime(),
    last_updated_ms: o.LastUpdated.getTime(),
    cmp_id: o.CmpId,
    cmp_version: o.CmpVersion,
    consent_screen: o.ConsentScreen,
    consent_language: o.ConsentLanguage,
    vendor_list_version: o.VendorListVersion,
    policy_version: o.PolicyVersion,
    is_service_specific: o.IsServiceSpecific,
    use_non_standard_texts: o.UseNonStandardStacks,
    special_feature_opt_ins: ids(o.SpecialFeatureOptins),
    purpose_consents: ids(o.PurposeConsents),
    purpose_legitimate_interests: ids(o.PurposeLegitimateInterests),
    purpose_one_treatment: o.PurposeOneTreatment,
    publisher_cc: o.PublisherCountryCode,
    vendor_consents: uniqSorted(o.VendorConsents),
    vendor_legitimate_interests: uniqSorted(o.VendorLegitimateInterests),
    publisher_restrictions: sortRestrictions(o.PublisherRestrictions.map((e) => ({ purpose: e.key, restriction_type: e.type, vendors: e.ids }))),
    disclosed_vendors: types.includes(1) ? uniqSorted(o.VendorsDisclosed) : null,
    publisher_tc: types.includes(3) ? {
      purpose_consents: ids(o.PublisherConsents),
      purpose_legitimate_interests: ids(o.PublisherLegitimateInterests),
      num_custom_purposes: o.NumCustomPurposes,
      custom_purpose_consents: ids(o.PublisherCustomConsents),
      custom_purpose_legitimate_interests: ids(o.PublisherCustomLegitimateInterests),
    } : null,
  };
}
export const withoutEncodings = (e) => { const { encodings, ...rest } = e; return rest; };

// ---------------------------------------------------------------------------
// Synthetic GVL. Encoding with @iabtechlabtcf/core needs a GVL: the encoder
// takes VendorListVersion, TcfPolicyVersion and ConsentLanguage from it, and
// its "semantic pre-encoder" drops vendor signals and publisher restrictions
// that the GVL does not allow. We cannot download the real GVL (no network),
// and we do not want to: a synthetic one makes the vectors independent of GVL
// contents. Every vendor 1..MAX_GVL_VENDOR exists (contiguous ids, so that
// the restriction range encoder merges only really consecutive ids), declares
// purposes 1-11 for consent, 2 and 7-11 for LI, and 2 and 7-11 as flexible.
// So every signal we set survives pre-encoding, and restriction types 1 and 2
// are accepted on purposes 2 and 7-11 (type 0 on any purpose 1-11).
// ---------------------------------------------------------------------------
export const MAX_GVL_VENDOR = 3000;
export const LI_PURPOSES = [2, 7, 8, 9, 10, 11];
export function gvlJson(vendorListVersion, tcfPolicyVersion) {
  const named = (n) => Object.fromEntries(range(1, n).map((i) => [i, { id: i, name: `item ${i}`, description: '' }]));
  const vendors = {};
  for (let i = 1; i <= MAX_GVL_VENDOR; i++) {
    vendors[i] = {
      id: i, name: `Vendor ${i}`,
      purposes: range(1, 11), legIntPurposes: [...LI_PURPOSES], flexiblePurposes: [...LI_PURPOSES],
      specialPurposes: [1, 2], features: [1, 2, 3], specialFeatures: [1, 2],
    };
  }
  return {
    gvlSpecificationVersion: 3, vendorListVersion, tcfPolicyVersion,
    lastUpdated: '2025-01-01T00:00:00Z',
    purposes: named(11), specialPurposes: named(2), features: named(3), specialFeatures: named(2),
    stacks: {}, dataCategories: named(11), vendors,
  };
}
export const gvlCache = new Map();
export function gvlFor(vlv, policy, lang) {
  const key = `${vlv}/${policy}/${lang}`;
  if (!gvlCache.has(key)) gvlCache.set(key, new GVL(gvlJson(vlv, policy), { language: lang }));
  return gvlCache.get(key);
}

// ---------------------------------------------------------------------------
// TCF case description -> string (encoded by @iabtechlabtcf/core)
// ---------------------------------------------------------------------------
export function normaliseCase(c) {
  return {
    cmpId: 10, cmpVersion: 2, consentScreen: 1, lang: 'EN', vlv: 80, nonStandard: false, p1t: false, cc: 'DE',
    sf: [], pc: [], pli: [], vc: [], vli: [], restrictions: [], disclosed: null, pub: null,
    ...c,
    lastUpdated: c.lastUpdated ?? c.created,
  };
}
export function encodeTcfCase(c) {
  const m = new TCModel(gvlFor(c.vlv, c.policy, c.lang));
  m.cmpId = c.cmpId;
  m.cmpVersion = c.cmpVersion;
  m.consentScreen = c.consentScreen;
  m.isServiceSpecific = true;
  m.useNonStandardTexts = c.nonStandard;
  m.purposeOneTreatment = c.p1t;
  m.publisherCountryCode = c.cc;
  m.specialFeatureOptins.set(c.sf);
  m.purposeConsents.set(c.pc);
  m.purposeLegitimateInterests.set(c.pli);
  m.vendorConsents.set(c.vc);
  m.vendorLegitimateInterests.set(c.vli);
  for (const r of c.restrictions) for (const v of r.vendors) m.publisherRestrictions.add(v, new PurposeRestriction(r.purpose, r.type));
  const segments = ['core'];
  if (c.disclosed) { m.vendorsDisclosed.set(c.disclosed); segments.push('vendorsDisclosed'); }
  if (c.pub) {
    m.publisherConsents.set(c.pub.pc ?? []);
    m.publisherLegitimateInterests.set(c.pub.pli ?? []);
    m.numCustomPurposes = c.pub.numCustom ?? 0;
    m.publisherCustomConsents.set(c.pub.cc ?? []);
    m.publisherCustomLegitimateInterests.set(c.pub.cli ?? []);
    segments.push('publisherTC');
  }
  // set last: nothing in TCModel touches these after this point
  m.created = new Date(c.created);
  m.lastUpdated = new Date(c.lastUpdated);
  return TCString.encode(m, { segments });
}
// What we mean the string to say (compared with what the libraries decode).
export function intendedTc(c, { gppAlwaysSegments = false } = {}) {
  const pubObj = (p) => ({
    purpose_consents: uniqSorted(p.pc ?? []),
    purpose_legitimate_interests: uniqSorted(p.pli ?? []),
    num_custom_purposes: p.numCustom ?? 0,
    custom_purpose_consents: uniqSorted(p.cc ?? []),
    custom_purpose_legitimate_interests: uniqSorted(p.cli ?? []),
  });
  return {
    version: 2,
    created_ms: decisecondMs(c.created),
    last_updated_ms: decisecondMs(c.lastUpdated),
    cmp_id: c.cmpId, cmp_version: c.cmpVersion, consent_screen: c.consentScreen,
    consent_language: c.lang, vendor_list_version: c.vlv, policy_version: c.policy,
    is_service_specific: true, use_non_standard_texts: c.nonStandard,
    special_feature_opt_ins: uniqSorted(c.sf), purpose_consents: uniqSorted(c.pc), purpose_legitimate_interests: uniqSorted(c.pli),
    purpose_one_treatment: c.p1t, publisher_cc: c.cc,
    vendor_consents: uniqSorted(c.vc), vendor_legitimate_interests: uniqSorted(c.vli),
    publisher_restrictions: sortRestrictions(c.restrictions.map((r) => ({ purpose: r.purpose, restriction_type: r.type, vendors: r.vendors }))),
    disclosed_vendors: c.disclosed ? uniqSorted(c.disclosed) : (gppAlwaysSegments ? [] : null),
    publisher_tc: c.pub ? pubObj(c.pub) : (gppAlwaysSegments ? pubObj({}) : null),
  };
}

// ---------------------------------------------------------------------------
// GPP: our own header / section parser (independent of @iabgpp/cmpapi)
// ---------------------------------------------------------------------------
export function readFib(r) {
  const F = [1, 2];
  let v = 0; let prev = 0; let i = 0;
  for (;;) {
    const b = r.int(1);
    if (b === 1 && prev === 1) return v;
    while (F.length <= i) F.push(F[F.length - 1] + F[F.length - 2]);
    if (b === 1) v += F[i];
    prev = b; i++;
  }
}
export function parseGppHeader(h) {
  const r = new BitReader(b64ToBits(h));
  const f = {};
  r.field(f, 'type', 6);
  r.field(f, 'version', 6);
  const n = r.field(f, 'numRanges', 12);
  const ids = [];
  let last = 0;
  for (let i = 0; i < n; i++) {
    const isRange = r.int(1);
    const start = last + readFib(r);
    if (isRange) { const end = start + readFib(r); ids.push(...range(start, end)); last = end; } else { ids.push(start); last = start; }
  }
  return { fields: f, ids, bits: r.bits };
}
// Field layouts. v2 of usnat (16 + 3 entries) and v1 of usca are read from
// the library itself below and checked against these hand-written lists.
export const USNAT_LAYOUT = {
  1: [['Version', 6], ['SharingNotice', 2], ['SaleOptOutNotice', 2], ['SharingOptOutNotice', 2], ['TargetedAdvertisingOptOutNotice', 2],
    ['SensitiveDataProcessingOptOutNotice', 2], ['SensitiveDataLimitUseNotice', 2], ['SaleOptOut', 2], ['SharingOptOut', 2], ['TargetedAdvertisingOptOut', 2],
    ['SensitiveDataProcessing', 2, 12], ['KnownChildSensitiveDataConsents', 2, 2], ['PersonalDataConsents', 2],
    ['MspaCoveredTransaction', 2], ['MspaOptOutOptionMode', 2], ['MspaServiceProviderMode', 2]],
};
USNAT_LAYOUT[2] = USNAT_LAYOUT[1].map(([n, w, c]) => (n === 'SensitiveDataProcessing' ? [n, w, 16] : n === 'KnownChildSensitiveDataConsents' ? [n, w, 3] : c ? [n, w, c] : [n, w]));
export const USCA_LAYOUT = {
  1: [['Version', 6], ['SaleOptOutNotice', 2], ['SharingOptOutNotice', 2], ['SensitiveDataLimitUseNotice', 2], ['SaleOptOut', 2], ['SharingOptOut', 2],
    ['SensitiveDataProcessing', 2, 9], ['KnownChildSensitiveDataConsents', 2, 2], ['PersonalDataConsents', 2],
    ['MspaCoveredTransaction', 2], ['MspaOptOutOptionMode', 2], ['MspaServiceProviderMode', 2]],
};
export const GPC_LAYOUT = [['SubsectionType', 2], ['Gpc', 1]];
export const layoutBits = (layout) => layout.reduce((s, [, w, c]) => s + w * (c ?? 1), 0);

export function libLayout(segmentClass, names) {
  const seg = new segmentClass();
  return names.map((n) => {
    const fld = seg.fields.get(n);
    if (fld.numElements !== undefined) return [n, fld.elementBitStringLength, fld.numElements];
    if (fld.bitStringLength !== undefined) return [n, fld.bitStringLength];
    if (fld.constructor.name === 'EncodableBoolean') return [n, 1];
    throw new Error(`unknown field type for ${n}`);
  });
}
assertEq(libLayout(UsNatCoreSegment, USNAT_CORE_SEGMENT_FIELD_NAMES), USNAT_LAYOUT[2], 'usnat core layout of the library (v2)');
assertEq(UsNat.VERSION, 2, 'usnat section version of the library');
assertEq(libLayout(UsCaCoreSegment, USCA_CORE_SEGMENT_FIELD_NAMES), USCA_LAYOUT[1], 'usca core layout of the library (v1)');
assertEq(UsCa.VERSION, 1, 'usca section version of the library');
assertEq(libLayout(UsNatGpcSegment, USNAT_GPC_SEGMENT_FIELD_NAMES).map(([, w]) => w), [2, 1], 'usnat GPC layout');
assertEq(libLayout(UsCaGpcSegment, USCA_GPC_SEGMENT_FIELD_NAMES).map(([, w]) => w), [2, 1], 'usca GPC layout');

export function parseUsSection(str, layouts, defects) {
  const parts = str.split('.');
  if (parts.some((p) => !B64_RE.test(p))) { defects.add('gpp_section'); return null; }
  const out = { fields: {}, values: {} };
  try {
    const bits = b64ToBits(parts[0]);
    const r = new BitReader(bits);
    const version = parseInt(bits.slice(0, 6), 2);
    const layout = layouts[version];
    if (!layout) { defects.add('gpp_section'); return null; }
    for (const [name, w, count] of layout) {
      if (count === undefined) {
        const v = r.field(out.fields, name, w);
        out.values[name] = v;
        if (w === 2 && v === 3) defects.add('gpp_section');
      } else {
        const off = r.pos;
        const arr = range(1, count).map(() => r.int(w));
        out.fields[name] = { off, len: w * count };
        out.values[name] = arr;
        if (arr.includes(3)) defects.add('gpp_section');
      }
    }
    if (out.values.MspaCoveredTransaction === 0) defects.add('gpp_section');
    out.coreBits = bits;
    if (parts.length > 2) defects.add('gpp_section');
    if (parts.length === 2) {
      const g = new BitReader(b64ToBits(parts[1]));
      const gf = {};
      if (g.field(gf, 'SubsectionType', 2) !== 1) defects.add('gpp_section');
      out.values.Gpc = g.field(gf, 'Gpc', 1) === 1;
    }
  } catch (e) {
    if (!(e instanceof Truncated)) throw e;
    defects.add('gpp_section');
    return null;
  }
  return out;
}
export const TCF_STRUCTURAL = new Set(['base64', 'truncated', 'empty']);
export function analyseGpp(str) {
  const defects = new Set();
  const res = { sections: [] };
  if (str === '') return { defects: ['empty'] };
  const parts = str.split('~');
  if (!B64_RE.test(parts[0])) return { defects: ['base64'] };
  let hdr;
  try { hdr = parseGppHeader(parts[0]); } catch (e) { if (e instanceof Truncated) return { defects: ['gpp_header'] }; throw e; }
  res.header = hdr;
  if (hdr.fields.type.value !== 3) return { ...res, defects: ['gpp_header'] };
  if (hdr.fields.version.value !== 1) return { ...res, defects: ['gpp_version'] };
  if (hdr.ids.length !== parts.length - 1) return { ...res, defects: ['gpp_sections'] };
  hdr.ids.forEach((id, i) => {
    const s = parts[i + 1];
    if (s === '') { defects.add('gpp_section'); return; }
    if (id === 2) {
      const a = analyseTc(s);
      // inside GPP, a broken encoding is a broken section; semantic TCF defects keep their names
      for (const d of a.defects) defects.add(TCF_STRUCTURAL.has(d) ? 'gpp_section' : d);
      res.sections.push({ id, analysis: a });
    } else if (id === 7) {
      res.sections.push({ id, parsed: parseUsSection(s, USNAT_LAYOUT, defects) });
    } else if (id === 8) {
      res.sections.push({ id, parsed: parseUsSection(s, USCA_LAYOUT, defects) });
    } else {
      throw new Error(`no vector uses GPP section ${id}`);
    }
  });
  return { ...res, defects: [...defects].sort() };
}

// ---------------------------------------------------------------------------
// GPP cases (encoded by @iabgpp/cmpapi)
// ---------------------------------------------------------------------------
export const USNAT_NAMES = USNAT_CORE_SEGMENT_FIELD_NAMES;
export const USCA_NAMES = USCA_CORE_SEGMENT_FIELD_NAMES;
export function usnat(values) {
  const o = {
    Version: 2, SharingNotice: 0, SaleOptOutNotice: 0, SharingOptOutNotice: 0, TargetedAdvertisingOptOutNotice: 0,
    SensitiveDataProcessingOptOutNotice: 0, SensitiveDataLimitUseNotice: 0, SaleOptOut: 0, SharingOptOut: 0, TargetedAdvertisingOptOut: 0,
    SensitiveDataProcessing: Array(16).fill(0), KnownChildSensitiveDataConsents: [0, 0, 0], PersonalDataConsents: 0,
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 0, MspaServiceProviderMode: 0, Gpc: undefined, ...values,
  };
  return o;
}
export function usca(values) {
  return {
    Version: 1, SaleOptOutNotice: 0, SharingOptOutNotice: 0, SensitiveDataLimitUseNotice: 0, SaleOptOut: 0, SharingOptOut: 0,
    SensitiveDataProcessing: Array(9).fill(0), KnownChildSensitiveDataConsents: [0, 0], PersonalDataConsents: 0,
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 0, MspaServiceProviderMode: 0, Gpc: undefined, ...values,
  };
}
export function setUs(g, section, names, spec) {
  for (const n of names) if (n !== 'Version') g.setFieldValue(section, n, spec[n]);
  if (spec.Version !== undefined) g.setFieldValue(section, 'Version', spec.Version);
  g.setFieldValue(section, 'GpcSegmentIncluded', spec.Gpc !== undefined);
  if (spec.Gpc !== undefined) g.setFieldValue(section, 'Gpc', spec.Gpc);
}
export function intendedUs(spec, names) {
  const o = {};
  for (const n of names) o[n] = spec[n];
  if (spec.Gpc !== undefined) o.Gpc = spec.Gpc;
  return o;
}
export function usFromLib(g, section, names) {
  const o = {};
  for (const n of names) o[n] = g.getFieldValue(section, n);
  if (g.getFieldValue(section, 'GpcSegmentIncluded')) o.Gpc = g.getFieldValue(section, 'Gpc');
  return o;
}
export function setTcfNative(g, raw) {
  const c = normaliseCase(raw);
  assertEq(c.lastUpdated, c.created, 'GPP-native tcfeuv2 always keeps Created == LastUpdated');
  const S = TcfEuV2.NAME;
  const bools = (n, ids) => range(1, n).map((i) => ids.includes(i));
  g.setFieldValue(S, 'CmpId', c.cmpId);
  g.setFieldValue(S, 'CmpVersion', c.cmpVersion);
  g.setFieldValue(S, 'ConsentScreen', c.consentScreen);
  g.setFieldValue(S, 'ConsentLanguage', c.lang);
  g.setFieldValue(S, 'VendorListVersion', c.vlv);
  g.setFieldValue(S, 'PolicyVersion', c.policy);
  g.setFieldValue(S, 'IsServiceSpecific', true);
  g.setFieldValue(S, 'UseNonStandardStacks', c.nonStandard);
  g.setFieldValue(S, 'SpecialFeatureOptins', bools(12, c.sf));
  g.setFieldValue(S, 'PurposeConsents', bools(24, c.pc));
  g.setFieldValue(S, 'PurposeLegitimateInterests', bools(24, c.pli));
  g.setFieldValue(S, 'PurposeOneTreatment', c.p1t);
  g.setFieldValue(S, 'PublisherCountryCode', c.cc);
  g.setFieldValue(S, 'VendorConsents', c.vc);
  g.setFieldValue(S, 'VendorLegitimateInterests', c.vli);
  g.setFieldValue(S, 'PublisherRestrictions', c.restrictions.map((r) => new RangeEntry(r.purpose, r.type, [...r.vendors])));
  if (c.disclosed) g.setFieldValue(S, 'VendorsDisclosed', c.disclosed);
  if (c.pub) {
    const n = c.pub.numCustom ?? 0;
    g.setFieldValue(S, 'PublisherConsents', bools(24, c.pub.pc ?? []));
    g.setFieldValue(S, 'PublisherLegitimateInterests', bools(24, c.pub.pli ?? []));
    g.setFieldValue(S, 'NumCustomPurposes', n);
    g.setFieldValue(S, 'PublisherCustomConsents', bools(n, c.pub.cc ?? []));
    g.setFieldValue(S, 'PublisherCustomLegitimateInterests', bools(n, c.pub.cli ?? []));
  }
  // Every other setter stamps Created/LastUpdated with "today"; setting Created
  // last overrides both (the library keeps them equal).
  g.setFieldValue(S, 'Created', new Date(c.created));
  return c;
}

// ---------------------------------------------------------------------------
// JSON output
// ---------------------------------------------------------------------------
// Pretty printer: objects one key per line, arrays of scalars on one line.
// Arrays of numbers/booleans and small flat objects go on one line.
export function oneLine(v) {
  if (Array.isArray(v)) return '[' + v.map(oneLine).join(', ') + ']';
  if (v !== null && typeof v === 'object') return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ': ' + oneLine(v[k])).join(', ') + '}';
  return JSON.stringify(v);
}
export const isScalar = (x) => x === null || typeof x !== 'object';
export function fmt(v, ind = '') {
  const next = ind + '  ';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    if (v.every((x) => isScalar(x) && typeof x !== 'string')) return oneLine(v);
    return '[\n' + v.map((x) => next + fmt(x, next)).join(',\n') + '\n' + ind + ']';
  }
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    if (keys.length === 0) return '{}';
    const flat = keys.every((k) => isScalar(v[k]) || (Array.isArray(v[k]) && v[k].every((x) => isScalar(x) && typeof x !== 'string')));
    if (flat && oneLine(v).length <= 100) return oneLine(v);
    return '{\n' + keys.map((k) => next + JSON.stringify(k) + ': ' + fmt(v[k], next)).join(',\n') + '\n' + ind + '}';
  }
  return JSON.stringify(v);
}
// Format `obj` with fmt(), check the round trip and write it (creating the folder).
export function writeJson(path, obj) {
  const text = fmt(obj) + '\n';
  assertEq(JSON.parse(text), JSON.parse(JSON.stringify(obj)), 'pretty printer round trip');
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}
