#!/usr/bin/env node
/**
 * generate.mjs: golden IAB TCF v2 and GPP test vectors for Candor's consent decoders.
 *
 * WHY THIS EXISTS
 *   Candor decodes TCF v2.2/v2.3 TC strings and GPP strings (tcfeuv2, usnat, usca)
 *   in Rust. Those decoders must agree bit for bit with IAB Tech Lab's reference
 *   implementations, `@iabtechlabtcf/core` and `@iabgpp/cmpapi`. This script
 *   encodes a fixed set of consent states with those libraries, decodes every
 *   produced string again with the same libraries, and writes the strings and
 *   the decoded values to tests/fixtures/consent/vectors.json. The Rust tests
 *   read that file.
 *   It also writes invalid strings that a strict decoder must reject. The
 *   reference encoders refuse to produce most of them, so each one is made by
 *   taking a valid string and rewriting one field at the bit level (or by
 *   dropping, duplicating or truncating a segment). The script checks that each
 *   invalid string has exactly the intended defect and nothing else.
 *
 * HOW TO RUN
 *   cd tests/consent_vectors && npm ci && node generate.mjs
 *   The library versions are pinned exactly in package.json and package-lock.json.
 *   The output is deterministic: every timestamp is fixed, the clock is frozen
 *   (new Date() and Date.now() return a fixed instant, so a library default
 *   cannot leak into the output), Math.random is disabled, and the only
 *   "random" vendor sets come from a seeded inline PRNG (mulberry32).
 *   Running it twice gives byte-identical output. Commit the regenerated JSON.
 *
 * The script throws, and writes nothing, if:
 *   - a decoded value differs from the intended one;
 *   - the script's own independent bit parser disagrees with the reference decoders;
 *   - an invalid vector has a defect other than the intended one;
 *   - a coverage requirement is not met.
 * See README.md in this folder for the format and for what we found out about
 * the libraries.
 */
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import { TCString } from '@iabtechlabtcf/core';
import { GppModel, UsNat, UsCa, TcfEuV2 } from '@iabgpp/cmpapi';
// Shared helpers (determinism guards, bit parser, synthetic GVL, encoders, printer): see lib.mjs.
import {
  mulberry32, REPO, TCF_VERSION, GPP_VERSION, assert, assertEq, range, uniqSorted, ms, DISCLOSED_VENDORS_CUTOFF_MS,
  b64ToBits, bitsToB64, writeBits, diffPositions, analyseTc, tcExpectedFromAnalysis, segmentTypesOf,
  tcExpectedFromTcfLib, tcExpectedFromGppObj, withoutEncodings, MAX_GVL_VENDOR, LI_PURPOSES, normaliseCase,
  encodeTcfCase, intendedTc, USNAT_LAYOUT, USCA_LAYOUT, GPC_LAYOUT, layoutBits, analyseGpp, USNAT_NAMES, USCA_NAMES,
  usnat, usca, setUs, intendedUs, usFromLib, setTcfNative, writeJson,
} from './lib.mjs';

const OUT = join(REPO, 'tests', 'fixtures', 'consent', 'vectors.json');
const SCRIPT_REL = 'tests/consent_vectors/generate.mjs';

// ---------------------------------------------------------------------------
// Valid TCF cases
// ---------------------------------------------------------------------------
const T = {
  d2024_05_20: ms(2024, 5, 20),
  d2025_01_10: ms(2025, 1, 10),
  d2025_03_14: ms(2025, 3, 14),
  d2025_07_09_round_down: ms(2025, 7, 9, 13, 45, 27, 347), // -> ...27.300
  d2025_07_09_round_up: ms(2025, 7, 9, 13, 45, 27, 350), // -> ...27.400 (Math.round half up)
  d2025_11_03: ms(2025, 11, 3),
  d2026_02_27_last_ds: ms(2026, 2, 27, 23, 59, 59, 900), // last decisecond before the cut-off
  d2026_02_28: ms(2026, 2, 28), // the cut-off itself
  d2026_06_01: ms(2026, 6, 1),
  d2026_09_15: ms(2026, 9, 15),
};

const tcfCases = [
  { name: 'tcf22-p4-bitfield-dense-small', policy: 4, created: T.d2024_05_20,
    pc: [1, 2, 3, 4, 7], pli: [2, 7], vc: [1, 2, 3, 5, 8, 13, 21, 34], vli: [2, 3, 5],
    expectEncodings: { vendor_consents: 'bitfield', vendor_legitimate_interests: 'bitfield' } },
  { name: 'tcf22-p4-range-sparse-single-ids', policy: 4, created: T.d2025_03_14, cc: 'FR', lang: 'FR',
    pc: [1, 2, 3, 4], pli: [2, 7, 9], vc: [2, 755, 1500, 2999], vli: [755],
    expectEncodings: { vendor_consents: 'range', vendor_legitimate_interests: 'range' } },
  { name: 'tcf22-p4-range-multi-id-ranges', policy: 4, created: T.d2025_03_14,
    pc: [1, 2, 3, 4, 5, 6], pli: [2, 7, 8], vc: [...range(100, 140), 300, ...range(1000, 1010)], vli: range(100, 120),
    expectEncodings: { vendor_consents: 'range', vendor_legitimate_interests: 'range' } },
  { name: 'tcf22-p4-range-singles-and-ranges-mixed', policy: 4, created: T.d2025_01_10, cc: 'NL', lang: 'NL',
    pc: [1, 3, 4], pli: [2, 10], vc: [50, ...range(60, 62), 77, ...range(900, 905), 2500], vli: [...range(1, 30), 50],
    // The library picks range here although it is longer (79 bits vs a 67-bit bitfield): its
    // length estimate is made before the last entry is added. Decoders must accept either.
    expectEncodings: { vendor_consents: 'range', vendor_legitimate_interests: 'range' } },
  { name: 'tcf22-p4-no-consent-at-all', policy: 4, created: T.d2025_03_14, cc: 'GB',
    expectEncodings: { vendor_consents: 'bitfield', vendor_legitimate_interests: 'bitfield' } },
  { name: 'tcf22-p4-all-purposes-all-special-features', policy: 4, created: T.d2025_03_14, cc: 'DE', lang: 'DE',
    sf: [1, 2], pc: range(1, 11), pli: LI_PURPOSES, vc: range(1, 60), vli: range(1, 60) },
  { name: 'tcf22-p4-purpose-one-treatment-sf1', policy: 4, created: T.d2025_03_14, cc: 'ES', lang: 'ES', p1t: true,
    sf: [1], pc: [2, 3, 4, 7], pli: [8, 9], vc: [4, 9, 16], vli: [4] },
  { name: 'tcf22-p4-non-standard-texts-sf2', policy: 4, created: T.d2025_03_14, cc: 'IT', lang: 'IT', nonStandard: true,
    sf: [2], pc: [1, 2, 9, 10], pli: [11], vc: [10, 20, 30], vli: [] },
  { name: 'tcf22-p4-li-each-allowed-purpose', policy: 4, created: T.d2025_03_14,
    pc: [1], pli: LI_PURPOSES, vc: [], vli: range(1, 12) },
  { name: 'tcf22-p4-restrictions-not-allowed', policy: 4, created: T.d2025_03_14,
    pc: [1, 2, 3, 4], pli: [2, 7], vc: range(1, 40), vli: range(1, 40),
    restrictions: [
      { purpose: 1, type: 0, vendors: [7] },
      { purpose: 3, type: 0, vendors: [...range(10, 15), 30] },
      { purpose: 4, type: 0, vendors: [...range(1, 3), 2000, ...range(2100, 2110)] },
    ] },
  { name: 'tcf22-p4-restrictions-require-consent', policy: 4, created: T.d2025_03_14, cc: 'PL', lang: 'PL',
    pc: [1, 2, 3, 4, 7], pli: [2, 7], vc: [5, 6, 7, 8], vli: [5, 6, 7, 8],
    restrictions: [
      { purpose: 2, type: 1, vendors: range(5, 8) },
      { purpose: 7, type: 1, vendors: [6, 755] },
    ] },
  { name: 'tcf22-p4-restrictions-require-li', policy: 4, created: T.d2025_03_14,
    pc: [1, 2, 3, 4], pli: [2, 9, 10], vc: [1, 2, 3], vli: [1, 2, 3],
    restrictions: [
      { purpose: 2, type: 2, vendors: [1] },
      { purpose: 9, type: 2, vendors: range(1, 3) },
      { purpose: 10, type: 2, vendors: [...range(100, 199), 2999] },
    ] },
  { name: 'tcf22-p4-restrictions-all-types-many-purposes', policy: 4, created: T.d2025_11_03,
    sf: [1], pc: range(1, 11), pli: [2, 7, 8, 9, 10, 11], vc: [...range(1, 20), 755, 1111], vli: [...range(1, 20), 1111],
    restrictions: [
      { purpose: 1, type: 0, vendors: [3, 755] },
      { purpose: 2, type: 0, vendors: [4] },
      { purpose: 2, type: 1, vendors: range(10, 12) },
      { purpose: 2, type: 2, vendors: [13, 1111] },
      { purpose: 7, type: 1, vendors: [1, ...range(5, 9)] },
      { purpose: 8, type: 2, vendors: range(1, 20) },
      { purpose: 11, type: 1, vendors: [2999] },
    ] },
  { name: 'tcf22-p4-publisher-tc-no-custom-purposes', policy: 4, created: T.d2025_03_14,
    pc: [1, 2, 3, 4], pli: [2, 7], vc: [1, 2, 3], vli: [],
    pub: { pc: [1, 3, 4], pli: [2, 7] } },
  { name: 'tcf22-p4-publisher-tc-custom-purposes', policy: 4, created: T.d2025_03_14,
    pc: [1, 2], pli: [2], vc: [8, 9], vli: [8],
    pub: { pc: [1, 2, 10], pli: [7, 8], numCustom: 2, cc: [1], cli: [2] } },
  { name: 'tcf22-p4-disclosed-vendors-before-cutoff', policy: 4, created: T.d2025_03_14,
    pc: [1, 2, 3, 4], pli: [2], vc: [1, 2, 3], vli: [2], disclosed: range(1, 10),
    expectEncodings: { disclosed_vendors: 'bitfield' } },
  { name: 'tcf22-p4-disclosed-and-publisher-tc', policy: 4, created: T.d2025_11_03, cc: 'BE', lang: 'FR',
    pc: [1, 2, 3, 4, 7, 8], pli: [9, 10], vc: [15, 16, 17, 1000], vli: [15],
    disclosed: [15, 16, 17, 18, 1000, 1001], pub: { pc: [1], pli: [], numCustom: 3, cc: [1, 3], cli: [] },
    expectEncodings: { disclosed_vendors: 'range' } },
  { name: 'tcf22-p4-created-before-last-updated', policy: 4, created: T.d2024_05_20, lastUpdated: T.d2025_03_14,
    pc: [1, 2], pli: [], vc: [7], vli: [] },
  { name: 'tcf22-p4-decisecond-rounding-down', policy: 4, created: T.d2025_07_09_round_down,
    pc: [1], vc: [1] },
  { name: 'tcf22-p4-decisecond-rounding-up', policy: 4, created: T.d2025_07_09_round_up,
    lastUpdated: T.d2025_07_09_round_down, pc: [1], vc: [2] },
  { name: 'tcf22-p4-single-vendor-45-bitfield', policy: 4, created: T.d2025_03_14, pc: [1], vc: [45],
    expectEncodings: { vendor_consents: 'bitfield' } },
  { name: 'tcf22-p4-single-vendor-46-range', policy: 4, created: T.d2025_03_14, pc: [1], vc: [46],
    expectEncodings: { vendor_consents: 'range' } },
  { name: 'tcf23-p5-2025-core-only', policy: 5, created: T.d2025_11_03,
    pc: [1, 2, 3, 4], pli: [2, 7, 10], vc: [1, 2, 755], vli: [2] },
  { name: 'tcf23-p5-last-decisecond-before-cutoff-core-only', policy: 5, created: T.d2026_02_27_last_ds,
    pc: [1, 2], pli: [7], vc: [3, 4], vli: [] },
  { name: 'tcf23-p5-at-cutoff-with-disclosed', policy: 5, created: T.d2026_02_28,
    pc: [1, 2, 3, 4], pli: [7], vc: [3, 4], vli: [4], disclosed: [3, 4, 5, 2000] },
  { name: 'tcf23-p5-2026-disclosed-range', policy: 5, created: T.d2026_06_01,
    pc: [1, 2, 3, 4], pli: [2, 7], vc: [11, 1400, 2800], vli: [1400],
    disclosed: [11, ...range(1400, 1420), 2800], expectEncodings: { disclosed_vendors: 'range' } },
  { name: 'tcf23-p5-2026-disclosed-bitfield', policy: 5, created: T.d2026_06_01, cc: 'AT', lang: 'DE',
    pc: [1, 2, 3, 4, 5, 6], pli: [2, 7, 8, 9, 10, 11], vc: [1, 3, 5, 7, 9], vli: [2, 4],
    disclosed: range(1, 12), expectEncodings: { disclosed_vendors: 'bitfield' } },
  { name: 'tcf23-p5-2026-full', policy: 5, created: T.d2026_06_01, cc: 'NL', lang: 'NL', vlv: 120,
    sf: [1, 2], pc: range(1, 11), pli: LI_PURPOSES, vc: [...range(1, 30), 755, ...range(800, 820)], vli: [...range(1, 10), 755],
    restrictions: [
      { purpose: 2, type: 1, vendors: [755] },
      { purpose: 3, type: 0, vendors: range(800, 805) },
      { purpose: 7, type: 2, vendors: [1, 2, 3, 9] },
      { purpose: 10, type: 1, vendors: [...range(20, 25), 810] },
    ],
    disclosed: [...range(1, 40), 755, ...range(800, 830)],
    pub: { pc: [1, 2, 3, 4], pli: [7, 8], numCustom: 4, cc: [1, 4], cli: [2, 3] } },
  { name: 'tcf23-p5-2026-reject-all-with-disclosed', policy: 5, created: T.d2026_06_01,
    disclosed: [...range(1, 5), 91, 755] },
  { name: 'tcf23-p5-2026-max-field-values', policy: 5, created: T.d2026_09_15,
    cmpId: 4095, cmpVersion: 4095, consentScreen: 63, vlv: 4095, cc: 'ZZ', lang: 'EN',
    pc: range(1, 11), pli: LI_PURPOSES, vc: [2999, 3000], vli: [3000], disclosed: [2999, 3000] },
  { name: 'tcf23-p4-2026-disclosed', policy: 4, created: T.d2026_06_01, cc: 'SE', lang: 'SV',
    pc: [1, 2], pli: [2], vc: [5], vli: [5], disclosed: [5, 6] },
];

// Seeded pseudo-random cases (fixed seed: the output never changes).
{
  const rnd = mulberry32(0xC4_D0_12);
  const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
  const subset = (xs, p) => xs.filter(() => rnd() < p);
  const dates = [T.d2024_05_20, T.d2025_01_10, T.d2025_11_03, T.d2026_06_01, T.d2026_09_15];
  const langs = ['EN', 'DE', 'FR', 'IT', 'ES', 'PL'];
  const ccs = ['DE', 'FR', 'IT', 'ES', 'PL', 'IE', 'PT'];
  const vendorSet = () => {
    const style = pick(['dense', 'sparse', 'clustered']);
    if (style === 'dense') return subset(range(1, 40 + Math.floor(rnd() * 200)), 0.6);
    if (style === 'sparse') return uniqSorted(range(1, 2 + Math.floor(rnd() * 8)).map(() => 1 + Math.floor(rnd() * MAX_GVL_VENDOR)));
    const out = [];
    for (let k = 0; k < 1 + Math.floor(rnd() * 5); k++) {
      const s = 1 + Math.floor(rnd() * (MAX_GVL_VENDOR - 40));
      out.push(...range(s, s + Math.floor(rnd() * 30)));
    }
    return uniqSorted(out);
  };
  for (let i = 1; i <= 10; i++) {
    const created = pick(dates);
    const vc = vendorSet();
    const vli = subset(vc, 0.4);
    const restrictions = [];
    for (const purpose of subset(range(1, 11), 0.25)) {
      // at most one restriction type per (purpose, vendor), so the vectors stay meaningful for legal-basis tests
      const types = LI_PURPOSES.includes(purpose) ? [0, 1, 2] : [0];
      const byType = new Map(types.map((t) => [t, []]));
      for (const v of subset(vc, 0.4)) byType.get(pick(types)).push(v);
      for (const [type, vendors] of byType) if (vendors.length) restrictions.push({ purpose, type, vendors });
    }
    const lang = pick(langs);
    tcfCases.push({
      name: `tcf-prng-${String(i).padStart(2, '0')}`,
      policy: created >= DISCLOSED_VENDORS_CUTOFF_MS ? 5 : pick([4, 5]),
      created, cmpId: 2 + Math.floor(rnd() * 400), cmpVersion: Math.floor(rnd() * 60), consentScreen: Math.floor(rnd() * 8),
      lang, cc: pick(ccs), vlv: 20 + Math.floor(rnd() * 140), nonStandard: rnd() < 0.2, p1t: rnd() < 0.15,
      sf: subset([1, 2], 0.5), pc: subset(range(1, 11), 0.6), pli: subset(LI_PURPOSES, 0.5),
      vc, vli, restrictions,
      disclosed: created >= DISCLOSED_VENDORS_CUTOFF_MS || rnd() < 0.3 ? uniqSorted([...vc, ...vendorSet()]) : null,
      pub: rnd() < 0.4 ? { pc: subset(range(1, 11), 0.5), pli: subset(LI_PURPOSES, 0.4), numCustom: Math.floor(rnd() * 5), cc: [], cli: [] } : null,
    });
    const last = tcfCases[tcfCases.length - 1];
    if (last.pub) {
      last.pub.cc = subset(range(1, last.pub.numCustom), 0.5);
      last.pub.cli = subset(range(1, last.pub.numCustom), 0.5);
    }
  }
}

// ---------------------------------------------------------------------------
// Build and check valid TCF vectors
// ---------------------------------------------------------------------------
const out = { generator: null, tcf: [], gpp: [] };
const validTcf = new Map(); // name -> { string, case, analysis }

for (const raw of tcfCases) {
  const c = normaliseCase(raw);
  assert(c.created < DISCLOSED_VENDORS_CUTOFF_MS || c.disclosed, `${c.name}: created after the TCF 2.3 cut-off needs DisclosedVendors`);
  assert(c.lastUpdated < DISCLOSED_VENDORS_CUTOFF_MS || c.disclosed, `${c.name}: lastUpdated after the cut-off needs DisclosedVendors`);
  const str = encodeTcfCase(c);
  const fromLib = tcExpectedFromTcfLib(str);
  const intended = intendedTc(c);
  assertEq(fromLib, intended, `${c.name}: TCString.decode() differs from the intended consent state`);
  const a = analyseTc(str);
  assertEq(a.defects, [], `${c.name}: our strict parser finds defects in a reference-encoded string`);
  const mine = tcExpectedFromAnalysis(a);
  assertEq(withoutEncodings(mine), fromLib, `${c.name}: our bit parser disagrees with TCString.decode()`);
  for (const [k, v] of Object.entries(c.expectEncodings ?? {})) {
    assertEq(mine.encodings[k], v, `${c.name}: encoding of ${k}`);
  }
  validTcf.set(c.name, { string: str, case: c, analysis: a });
  out.tcf.push({ name: c.name, string: str, valid: true, expected: { ...fromLib, encodings: mine.encodings } });
}

// ---------------------------------------------------------------------------
// Invalid TCF vectors: a valid string plus one precise bit-level defect
// ---------------------------------------------------------------------------
const tcfLibAcceptsInvalid = [];
function referenceTcfAccepts(str) {
  try { TCString.decode(str); return true; } catch { return false; }
}
function baseOf(name) {
  const v = validTcf.get(name);
  assert(v, `unknown base vector ${name}`);
  return v;
}
// Rewrite one field (by name from our parser) of segment `segIndex` of `str`.
function mutateField(str, segIndex, fieldName, value) {
  const a = analyseTc(str);
  const seg = a.segments[segIndex];
  const fld = seg.fields[fieldName];
  assert(fld, `field ${fieldName} not found in segment ${segIndex}`);
  const bits = writeBits(seg.bits, fld.off, fld.len, value);
  const parts = str.split('.');
  parts[segIndex] = bitsToB64(bits);
  return { string: parts.join('.'), off: fld.off, len: fld.len, oldValue: fld.value };
}
function checkOnlyFieldChanged(orig, mutated, segIndex, off, len) {
  const po = orig.split('.');
  const pm = mutated.split('.');
  assertEq(pm.length, po.length, 'segment count changed');
  for (let i = 0; i < po.length; i++) {
    if (i !== segIndex) { assertEq(pm[i], po[i], `segment ${i} changed`); continue; }
    const d = diffPositions(b64ToBits(po[i]), b64ToBits(pm[i]));
    assert(d.length > 0, 'mutation changed nothing');
    assert(d.every((p) => p >= off && p < off + len), `bits changed outside [${off}, ${off + len}): ${d}`);
  }
}
const invalidTcf = [];
function addInvalidTcf(name, defect, string, description, check) {
  assertEq(analyseTc(string).defects, [defect], `${name}: defects found by the strict parser`);
  if (check) check();
  const accepts = referenceTcfAccepts(string);
  if (accepts) tcfLibAcceptsInvalid.push(name);
  invalidTcf.push({ name, string, valid: false, defect, description, reference_decoder_accepts: accepts });
}
function fieldDefect(name, defect, baseName, segIndex, fieldName, value, description) {
  const base = baseOf(baseName).string;
  const m = mutateField(base, segIndex, fieldName, value);
  assert(m.oldValue !== value, `${name}: field already had value ${value}`);
  addInvalidTcf(name, defect, m.string, `${description} (base: ${baseName}; ${fieldName} ${m.oldValue} -> ${value})`,
    () => checkOnlyFieldChanged(base, m.string, segIndex, m.off, m.len));
}
function findFieldName(a, segIndex, predicate, what) {
  const names = Object.keys(a.segments[segIndex].fields).filter(predicate);
  assert(names.length > 0, `no field for ${what}`);
  return names;
}

// empty
addInvalidTcf('tcf-invalid-empty', 'empty', '', 'empty string');

// base64url violations
{
  const base = baseOf('tcf22-p4-restrictions-require-li').string;
  const s1 = base.slice(0, 10) + '+' + base.slice(11);
  addInvalidTcf('tcf-invalid-base64-plus', 'base64', s1, "core segment char 10 replaced by '+' (standard base64, not base64url)",
    () => assertEq(diffPositions(base, s1), [10], 'one char changed'));
  const s2 = base + '==';
  addInvalidTcf('tcf-invalid-base64-padding', 'base64', s2, "'==' padding appended (TC strings are unpadded base64url)");
  const b2 = baseOf('tcf23-p5-2026-disclosed-range').string;
  const parts = b2.split('.');
  parts[1] = parts[1].slice(0, 3) + '/' + parts[1].slice(4);
  const s3 = parts.join('.');
  addInvalidTcf('tcf-invalid-base64-slash-in-disclosed-vendors', 'base64', s3, "DisclosedVendors segment char 3 replaced by '/'",
    () => assertEq(diffPositions(b2, s3).length, 1, 'one char changed'));
}

// truncated
{
  const base = baseOf('tcf22-p4-restrictions-all-types-many-purposes');
  const s1 = base.string.slice(0, 20);
  addInvalidTcf('tcf-invalid-truncated-core-20-chars', 'truncated', s1, 'core segment cut to 20 chars (120 bits), inside PurposesConsent',
    () => assert(base.string.startsWith(s1), 'prefix'));
  const f = base.analysis.core.fields;
  const cutVc = Math.floor((f['vendorConsents.isRange'].off + 1 + 12 + 10) / 6); // inside the first range entry
  const s2 = base.string.slice(0, cutVc);
  addInvalidTcf('tcf-invalid-truncated-in-vendor-consents', 'truncated', s2, `core segment cut to ${cutVc} chars, inside the vendor consent range entries`,
    () => assert(base.string.startsWith(s2), 'prefix'));
  const cutPr = Math.floor(f['pubRestrictions.num'].off / 6); // before NumPubRestrictions is complete
  const s3 = base.string.slice(0, cutPr);
  addInvalidTcf('tcf-invalid-truncated-before-pub-restrictions', 'truncated', s3, `core segment cut to ${cutPr} chars: NumPubRestrictions is missing`,
    () => assert(base.string.startsWith(s3), 'prefix'));
  const b2 = baseOf('tcf23-p5-2026-disclosed-range').string;
  const parts = b2.split('.');
  parts[1] = parts[1].slice(0, 2); // 12 bits: SegmentType + 9 bits of MaxVendorId
  const s4 = parts.join('.');
  addInvalidTcf('tcf-invalid-truncated-disclosed-vendors', 'truncated', s4, 'DisclosedVendors segment cut to 2 chars (12 bits)');
  const b3 = baseOf('tcf22-p4-bitfield-dense-small');
  const bfEnd = b3.analysis.core.fields['vendorConsents.bitfield'];
  const cut5 = Math.floor((bfEnd.off + bfEnd.len - 1) / 6);
  const s5 = b3.string.slice(0, cut5);
  addInvalidTcf('tcf-invalid-truncated-in-vendor-bitfield', 'truncated', s5, `core segment cut to ${cut5} chars, inside the vendor consent bitfield`,
    () => assert(b3.string.startsWith(s5), 'prefix'));
}

// version
fieldDefect('tcf-invalid-version-1', 'version', 'tcf22-p4-range-multi-id-ranges', 0, 'version', 1, 'Version = 1');
fieldDefect('tcf-invalid-version-3', 'version', 'tcf23-p5-2026-full', 0, 'version', 3, 'Version = 3');
// IsServiceSpecific
fieldDefect('tcf-invalid-is-service-specific-0', 'is_service_specific', 'tcf22-p4-restrictions-all-types-many-purposes', 0, 'isServiceSpecific', 0, 'IsServiceSpecific = 0');
// TcfPolicyVersion
fieldDefect('tcf-invalid-policy-version-2', 'policy_version', 'tcf22-p4-bitfield-dense-small', 0, 'policyVersion', 2, 'TcfPolicyVersion = 2 (TCF 2.0)');
fieldDefect('tcf-invalid-policy-version-3', 'policy_version', 'tcf22-p4-range-sparse-single-ids', 0, 'policyVersion', 3, 'TcfPolicyVersion = 3 (TCF 2.1)');
// LI bit for purposes 3-6
for (const [p, baseName] of [[3, 'tcf22-p4-bitfield-dense-small'], [4, 'tcf22-p4-all-purposes-all-special-features'], [5, 'tcf23-p5-2026-full'], [6, 'tcf22-p4-li-each-allowed-purpose']]) {
  const base = baseOf(baseName);
  const liField = base.analysis.core.fields.purposeLegitimateInterests;
  assert(liField.raw[p - 1] === '0', 'LI bit already set');
  const newRaw = liField.raw.slice(0, p - 1) + '1' + liField.raw.slice(p);
  fieldDefect(`tcf-invalid-li-purpose-${p}`, 'li_purpose', baseName, 0, 'purposeLegitimateInterests', parseInt(newRaw, 2),
    `PurposesLITransparency bit for purpose ${p} set (LI is not allowed for purposes 3-6 since TCF 2.2)`);
}
// range End < Start (vendor consents, publisher restriction, disclosed vendors)
function endBeforeStart(name, baseName, segIndex, prefixRe, description) {
  const base = baseOf(baseName);
  const seg = base.analysis.segments[segIndex];
  // a multi-id range entry that is not the last one in its list, so that MaxVendorId stays consistent
  const ends = Object.keys(seg.fields).filter((k) => prefixRe.test(k) && k.endsWith('.end'));
  const cand = ends.find((k) => {
    const m = k.match(/^(.*)\.entries\[(\d+)\]\.end$/);
    return seg.fields[`${m[1]}.entries[${Number(m[2]) + 1}].isRange`] !== undefined;
  });
  assert(cand, `${name}: no non-final multi-id range entry in ${baseName}`);
  const start = seg.fields[cand.replace(/\.end$/, '.start')].value;
  fieldDefect(name, 'range', baseName, segIndex, cand, start - 1, description);
}
endBeforeStart('tcf-invalid-range-end-before-start-vendor-consents', 'tcf22-p4-range-multi-id-ranges', 0, /^vendorConsents\.entries/, 'vendor consent range entry with EndVendorId = StartOrOnlyVendorId - 1');
endBeforeStart('tcf-invalid-range-end-before-start-pub-restriction', 'tcf22-p4-restrictions-not-allowed', 0, /^pubRestrictions\[1\]\.entries/, 'publisher restriction range entry with EndVendorId < StartOrOnlyVendorId');
endBeforeStart('tcf-invalid-range-end-before-start-disclosed-vendors', 'tcf23-p5-2026-disclosed-range', 1, /^vendors\.entries/, 'DisclosedVendors range entry with EndVendorId < StartOrOnlyVendorId');
// ids beyond MaxVendorId
function maxIdTooSmall(name, baseName, segIndex, prefix, description) {
  const base = baseOf(baseName);
  const seg = base.analysis.segments[segIndex];
  assertEq(seg.fields[`${prefix}.isRange`].value, 1, `${name}: base section must be range-encoded`);
  const maxId = seg.fields[`${prefix}.maxId`].value;
  fieldDefect(name, 'max_vendor_id', baseName, segIndex, `${prefix}.maxId`, maxId - 1, description);
}
maxIdTooSmall('tcf-invalid-max-vendor-id-vendor-consents', 'tcf22-p4-range-sparse-single-ids', 0, 'vendorConsents', 'vendor consent MaxVendorId one below the highest range id');
maxIdTooSmall('tcf-invalid-max-vendor-id-vendor-li', 'tcf22-p4-range-multi-id-ranges', 0, 'vendorLegitimateInterests', 'vendor LI MaxVendorId one below the end of the last range');
maxIdTooSmall('tcf-invalid-max-vendor-id-disclosed-vendors', 'tcf23-p5-2026-disclosed-range', 1, 'vendors', 'DisclosedVendors MaxVendorId one below the highest id');
// RestrictionType 3
fieldDefect('tcf-invalid-restriction-type-3', 'restriction_type', 'tcf22-p4-restrictions-require-consent', 0, 'pubRestrictions[0].restrictionType', 3, 'publisher restriction with RestrictionType = 3 (undefined)');
fieldDefect('tcf-invalid-restriction-type-3-not-first', 'restriction_type', 'tcf22-p4-restrictions-all-types-many-purposes', 0, 'pubRestrictions[4].restrictionType', 3, 'fifth publisher restriction with RestrictionType = 3');
// unknown segment types
fieldDefect('tcf-invalid-segment-type-5', 'segment_type', 'tcf22-p4-publisher-tc-custom-purposes', 1, 'segmentType', 5, 'PublisherTC segment relabelled with the unknown SegmentType 5');
fieldDefect('tcf-invalid-segment-type-7', 'segment_type', 'tcf23-p5-2026-full', 2, 'segmentType', 7, 'PublisherTC segment relabelled with the unknown SegmentType 7');
// duplicate segments
{
  const b = baseOf('tcf23-p5-2026-disclosed-range').string;
  const [core, dv] = b.split('.');
  const s1 = `${core}.${dv}.${dv}`;
  addInvalidTcf('tcf-invalid-duplicate-disclosed-vendors', 'duplicate_segment', s1, 'the DisclosedVendors segment appears twice');
  const b2 = baseOf('tcf23-p5-2026-full').string;
  const [c2, d2, p2] = b2.split('.');
  assertEq(segmentTypesOf(b2), [1, 3], 'base segment order');
  const s2 = `${c2}.${d2}.${p2}.${p2}`;
  addInvalidTcf('tcf-invalid-duplicate-publisher-tc', 'duplicate_segment', s2, 'the PublisherTC segment appears twice');
  const s3 = `${c2}.${d2}.${p2}.${d2}`;
  addInvalidTcf('tcf-invalid-duplicate-disclosed-vendors-not-adjacent', 'duplicate_segment', s3, 'DisclosedVendors, PublisherTC, then DisclosedVendors again');
}
// missing DisclosedVendors on/after 2026-02-28
{
  const b = baseOf('tcf23-p5-2026-full').string;
  const [core, , pub] = b.split('.');
  addInvalidTcf('tcf-invalid-2026-no-disclosed-vendors', 'disclosed_vendors', `${core}.${pub}`,
    'created 2026-06-01 (TCF 2.3 rules) but the DisclosedVendors segment was removed (PublisherTC kept)');
  const b2 = baseOf('tcf23-p5-at-cutoff-with-disclosed').string;
  addInvalidTcf('tcf-invalid-at-cutoff-no-disclosed-vendors', 'disclosed_vendors', b2.split('.')[0],
    'created exactly 2026-02-28T00:00:00Z, core segment only');
  fieldDefect('tcf-invalid-created-2026-core-only', 'disclosed_vendors', 'tcf23-p5-2025-core-only', 0, 'created', T.d2026_06_01 / 100,
    'Created rewritten to 2026-06-01 in a core-only string');
}
out.tcf.push(...invalidTcf);

const SDP_MIX16 = [0, 1, 2, 0, 1, 2, 2, 1, 0, 2, 1, 0, 1, 2, 2, 1];
const gppCases = [
  { name: 'gpp-usnat-all-not-applicable-no-gpc', usnat: usnat({}) },
  { name: 'gpp-usnat-all-fields-no-gpc', usnat: usnat({
    SharingNotice: 1, SaleOptOutNotice: 1, SharingOptOutNotice: 1, TargetedAdvertisingOptOutNotice: 1,
    SensitiveDataProcessingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1, SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 2,
    SensitiveDataProcessing: SDP_MIX16, KnownChildSensitiveDataConsents: [1, 2, 0], PersonalDataConsents: 2,
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 2, MspaServiceProviderMode: 1 }) },
  { name: 'gpp-usnat-opted-out-everything-gpc-true', usnat: usnat({
    SharingNotice: 1, SaleOptOutNotice: 1, SharingOptOutNotice: 1, TargetedAdvertisingOptOutNotice: 1,
    SensitiveDataProcessingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1, SaleOptOut: 1, SharingOptOut: 1, TargetedAdvertisingOptOut: 1,
    SensitiveDataProcessing: Array(16).fill(1), KnownChildSensitiveDataConsents: [1, 1, 1], PersonalDataConsents: 1,
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 1, MspaServiceProviderMode: 2, Gpc: true }) },
  { name: 'gpp-usnat-consented-everything-gpc-false', usnat: usnat({
    SharingNotice: 1, SaleOptOutNotice: 1, SharingOptOutNotice: 1, TargetedAdvertisingOptOutNotice: 1,
    SensitiveDataProcessingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1, SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 2,
    SensitiveDataProcessing: Array(16).fill(2), KnownChildSensitiveDataConsents: [2, 2, 2], PersonalDataConsents: 2,
    MspaCoveredTransaction: 2, MspaOptOutOptionMode: 0, MspaServiceProviderMode: 0, Gpc: false }) },
  { name: 'gpp-usnat-notice-not-provided-service-provider-mode', usnat: usnat({
    SharingNotice: 2, SaleOptOutNotice: 2, SharingOptOutNotice: 2, TargetedAdvertisingOptOutNotice: 2,
    SensitiveDataProcessingOptOutNotice: 2, SensitiveDataLimitUseNotice: 2, SaleOptOut: 0, SharingOptOut: 0, TargetedAdvertisingOptOut: 0,
    SensitiveDataProcessing: [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], KnownChildSensitiveDataConsents: [0, 0, 1], PersonalDataConsents: 0,
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 2, MspaServiceProviderMode: 1, Gpc: true }) },
  { name: 'gpp-usnat-version-1-twelve-sensitive-categories', usnat: usnat({
    Version: 1, SharingNotice: 1, SaleOptOutNotice: 1, SharingOptOutNotice: 2, TargetedAdvertisingOptOutNotice: 1,
    SensitiveDataProcessingOptOutNotice: 0, SensitiveDataLimitUseNotice: 1, SaleOptOut: 1, SharingOptOut: 2, TargetedAdvertisingOptOut: 1,
    SensitiveDataProcessing: SDP_MIX16.slice(0, 12), KnownChildSensitiveDataConsents: [2, 1], PersonalDataConsents: 1,
    MspaCoveredTransaction: 2, MspaOptOutOptionMode: 0, MspaServiceProviderMode: 0 }) },
  { name: 'gpp-usnat-version-1-gpc-true', usnat: usnat({
    Version: 1, SaleOptOutNotice: 1, SaleOptOut: 1, SensitiveDataProcessing: Array(12).fill(1), KnownChildSensitiveDataConsents: [1, 1],
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 1, MspaServiceProviderMode: 2, Gpc: true }) },
  { name: 'gpp-usca-all-not-applicable-no-gpc', usca: usca({}) },
  { name: 'gpp-usca-all-fields-gpc-true', usca: usca({
    SaleOptOutNotice: 1, SharingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1, SaleOptOut: 1, SharingOptOut: 1,
    SensitiveDataProcessing: [1, 2, 0, 1, 2, 0, 1, 2, 1], KnownChildSensitiveDataConsents: [1, 2], PersonalDataConsents: 2,
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 1, MspaServiceProviderMode: 2, Gpc: true }) },
  { name: 'gpp-usca-limit-use-all-sensitive-gpc-false', usca: usca({
    SaleOptOutNotice: 1, SharingOptOutNotice: 1, SensitiveDataLimitUseNotice: 1, SaleOptOut: 2, SharingOptOut: 2,
    SensitiveDataProcessing: Array(9).fill(1), KnownChildSensitiveDataConsents: [2, 2], PersonalDataConsents: 1,
    MspaCoveredTransaction: 2, Gpc: false }) },
  { name: 'gpp-usca-no-notice-service-provider', usca: usca({
    SaleOptOutNotice: 2, SharingOptOutNotice: 2, SensitiveDataLimitUseNotice: 2,
    SensitiveDataProcessing: [0, 0, 0, 0, 0, 0, 0, 0, 2], KnownChildSensitiveDataConsents: [0, 1],
    MspaCoveredTransaction: 1, MspaOptOutOptionMode: 2, MspaServiceProviderMode: 1 }) },
  { name: 'gpp-tcfeuv2-embedded-tcf-core-only', tcfEmbed: 'tcf22-p4-restrictions-all-types-many-purposes' },
  { name: 'gpp-tcfeuv2-embedded-tcf-all-segments', tcfEmbed: 'tcf23-p5-2026-full' },
  { name: 'gpp-tcfeuv2-embedded-tcf-created-ne-last-updated', tcfEmbed: 'tcf22-p4-created-before-last-updated' },
  { name: 'gpp-tcfeuv2-native-2026', tcfNative: {
    name: 'native-2026', policy: 5, created: T.d2026_06_01, cc: 'FR', lang: 'FR', vlv: 130,
    sf: [2], pc: [1, 2, 3, 4, 7, 9, 10], pli: [2, 8, 11], vc: [...range(1, 25), 755, 2400], vli: [1, 2, 755],
    restrictions: [{ purpose: 2, type: 1, vendors: [755] }, { purpose: 4, type: 0, vendors: range(3, 6) }],
    disclosed: [...range(1, 30), 755, 2400], pub: { pc: [1, 3], pli: [2], numCustom: 2, cc: [2], cli: [1] } } },
  { name: 'gpp-tcfeuv2-native-2025-range-vendors', tcfNative: {
    name: 'native-2025', policy: 4, created: T.d2025_03_14, cc: 'DE', lang: 'DE', vlv: 90,
    pc: [1, 2, 3, 4], pli: [7], vc: [2, 755, 1500, 2999], vli: [...range(100, 140), 300] } },
  { name: 'gpp-tcfeuv2-usnat', tcfEmbed: 'tcf23-p5-2026-disclosed-range', usnat: usnat({
    SharingNotice: 1, SaleOptOutNotice: 1, SharingOptOutNotice: 1, TargetedAdvertisingOptOutNotice: 1, SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 1,
    SensitiveDataProcessing: SDP_MIX16.slice().reverse(), KnownChildSensitiveDataConsents: [0, 0, 2], PersonalDataConsents: 1, Gpc: false }) },
  { name: 'gpp-tcfeuv2-usca', tcfEmbed: 'tcf22-p4-publisher-tc-custom-purposes', usca: usca({
    SaleOptOutNotice: 1, SharingOptOutNotice: 1, SaleOptOut: 1, SharingOptOut: 2, SensitiveDataProcessing: [2, 2, 2, 2, 0, 0, 0, 0, 1], Gpc: true }) },
  { name: 'gpp-usnat-usca', usnat: usnat({
    SaleOptOutNotice: 1, SharingOptOutNotice: 1, TargetedAdvertisingOptOutNotice: 1, SaleOptOut: 1, SharingOptOut: 1, TargetedAdvertisingOptOut: 1,
    SensitiveDataProcessing: Array(16).fill(1), Gpc: true }),
  usca: usca({ SaleOptOutNotice: 1, SharingOptOutNotice: 1, SaleOptOut: 1, SharingOptOut: 1, SensitiveDataLimitUseNotice: 1,
    SensitiveDataProcessing: Array(9).fill(1), Gpc: true }) },
  { name: 'gpp-tcfeuv2-usnat-usca', tcfNative: {
    name: 'native-3', policy: 5, created: T.d2026_09_15, vlv: 140, sf: [1, 2], pc: range(1, 11), pli: LI_PURPOSES,
    vc: range(1, 50), vli: range(1, 50), restrictions: [{ purpose: 7, type: 2, vendors: [1, 2] }], disclosed: range(1, 60) },
  usnat: usnat({ SharingNotice: 1, SaleOptOutNotice: 1, SaleOptOut: 2, SensitiveDataProcessing: Array(16).fill(2), PersonalDataConsents: 2, MspaCoveredTransaction: 2 }),
  usca: usca({ SaleOptOutNotice: 1, SaleOptOut: 2, KnownChildSensitiveDataConsents: [1, 1], MspaCoveredTransaction: 2, Gpc: false }) },
];

const validGpp = new Map();
const gppFindings = {};
for (const c of gppCases) {
  const g = new GppModel();
  let intendedTcf = null;
  if (c.tcfEmbed) {
    const base = baseOf(c.tcfEmbed);
    g.decodeSection(TcfEuV2.NAME, base.string);
    intendedTcf = intendedTc(base.case, { gppAlwaysSegments: true });
  }
  let nativeCase = null;
  if (c.tcfNative) { nativeCase = setTcfNative(g, c.tcfNative); intendedTcf = intendedTc(nativeCase, { gppAlwaysSegments: true }); }
  if (c.usnat) setUs(g, UsNat.NAME, USNAT_NAMES, c.usnat);
  if (c.usca) setUs(g, UsCa.NAME, USCA_NAMES, c.usca);
  const str = g.encode();

  // decode with the reference library
  const d = new GppModel(str);
  const obj = d.toObject();
  const sectionIds = d.getSectionIds();
  const sections = str.split('~').slice(1);
  const expected = { section_ids: sectionIds };
  const intendedIds = [...(intendedTcf ? [2] : []), ...(c.usnat ? [7] : []), ...(c.usca ? [8] : [])];
  assertEq(sectionIds, intendedIds, `${c.name}: section ids`);
  const analysis = analyseGpp(str);
  assertEq(analysis.defects, [], `${c.name}: our strict GPP parser finds defects`);
  assertEq(analysis.header.ids, sectionIds, `${c.name}: our header parser disagrees with the library`);
  if (intendedTcf) {
    const sec = sections[sectionIds.indexOf(2)];
    const fromGpp = tcExpectedFromGppObj(obj.tcfeuv2, sec);
    assertEq(fromGpp, intendedTcf, `${c.name}: tcfeuv2 decoded by @iabgpp/cmpapi differs from the intended state`);
    assertEq(tcExpectedFromTcfLib(sec), fromGpp, `${c.name}: @iabtechlabtcf/core decodes the tcfeuv2 section differently`);
    const mine = tcExpectedFromAnalysis(analysis.sections.find((s) => s.id === 2).analysis);
    assertEq(withoutEncodings(mine), fromGpp, `${c.name}: our bit parser disagrees on the tcfeuv2 section`);
    expected.tcfeuv2 = { ...fromGpp, encodings: mine.encodings };
    if (c.tcfEmbed) {
      const orig = baseOf(c.tcfEmbed).string;
      const [origCore, ...origSegs] = orig.split('.');
      const segOfType = (t, empty) => origSegs.find((x) => segmentTypesOf('.' + x)[0] === t) ?? empty;
      assertEq(sec, [origCore, segOfType(1, 'IAAA'), segOfType(3, 'YAAAAAAAAAAA')].join('.'), `${c.name}: embedding of the TC string in the tcfeuv2 section`);
      gppFindings.embedding = 'the TC string segments are copied verbatim, always in the order core.DisclosedVendors.PublisherTC; a missing DisclosedVendors becomes IAAA (empty) and a missing PublisherTC becomes YAAAAAAAAAAA (empty)';
    }
    if (nativeCase) {
      // Compare with what @iabtechlabtcf/core encodes for the same consent state (all three segments).
      const tcfLibStr = encodeTcfCase({ ...nativeCase, disclosed: nativeCase.disclosed ?? [], pub: nativeCase.pub ?? {} });
      gppFindings[c.name] = tcfLibStr === sec ? 'identical to @iabtechlabtcf/core output' : `differs from @iabtechlabtcf/core output: ${tcfLibStr}`;
      // a vendor-set-equal result is required either way
      assertEq(withoutEncodings(tcExpectedFromTcfLib(tcfLibStr)), withoutEncodings(expected.tcfeuv2), `${c.name}: the two libraries disagree on the consent state`);
    }
  }
  for (const [key, id, names, spec, layouts] of [['usnat', 7, USNAT_NAMES, c.usnat, USNAT_LAYOUT], ['usca', 8, USCA_NAMES, c.usca, USCA_LAYOUT]]) {
    if (!spec) continue;
    const fromLib = usFromLib(d, key, names);
    assertEq(fromLib, intendedUs(spec, names), `${c.name}: ${key} decoded by @iabgpp/cmpapi differs from the intended values`);
    const mine = analysis.sections.find((s) => s.id === id).parsed.values;
    assertEq(mine, fromLib, `${c.name}: our ${key} parser disagrees with the library`);
    expected[key] = fromLib;
  }
  validGpp.set(c.name, { string: str, analysis });
  out.gpp.push({ name: c.name, string: str, valid: true, expected });
}

// ---------------------------------------------------------------------------
// Invalid GPP vectors
// ---------------------------------------------------------------------------
const gppLibAcceptsInvalid = [];
function referenceGppAccepts(str) {
  try {
    const g = new GppModel(str);
    g.getSectionIds();
    g.toObject(); // forces every section and segment to be decoded
    return true;
  } catch {
    return false;
  }
}
const invalidGpp = [];
function addInvalidGpp(name, defect, string, description, check) {
  assertEq(analyseGpp(string).defects, [defect], `${name}: defects found by our strict GPP parser`);
  if (check) check();
  const accepts = referenceGppAccepts(string);
  if (accepts) gppLibAcceptsInvalid.push(name);
  invalidGpp.push({ name, string, valid: false, defect, description, reference_decoder_accepts: accepts });
}
const gppBase = (n) => { const v = validGpp.get(n); assert(v, `unknown GPP base ${n}`); return v.string; };
function mutateGppPart(str, partIndex, subIndex, off, len, value) {
  const parts = str.split('~');
  const subs = parts[partIndex].split('.');
  const bits = b64ToBits(subs[subIndex]);
  const oldValue = parseInt(bits.slice(off, off + len), 2);
  assert(oldValue !== value, 'mutation must change the value');
  const nb = writeBits(bits, off, len, value);
  assertEq(diffPositions(bits, nb).every((p) => p >= off && p < off + len), true, 'bits changed outside the field');
  subs[subIndex] = bitsToB64(nb);
  parts[partIndex] = subs.join('.');
  return parts.join('~');
}

addInvalidGpp('gpp-invalid-empty', 'empty', '', 'empty string');
{
  const b = gppBase('gpp-usnat-all-fields-no-gpc');
  addInvalidGpp('gpp-invalid-header-type-4', 'gpp_header', mutateGppPart(b, 0, 0, 0, 6, 4), 'header Type = 4 instead of 3');
  addInvalidGpp('gpp-invalid-header-type-0', 'gpp_header', mutateGppPart(b, 0, 0, 0, 6, 0), 'header Type = 0 instead of 3');
  const tcfOnly = baseOf('tcf22-p4-range-sparse-single-ids').string;
  addInvalidGpp('gpp-invalid-header-is-a-bare-tc-string', 'gpp_header', tcfOnly,
    'a bare TC string where a GPP string is expected: the first 6 bits (TC Version = 2) are not the GPP header Type 3');
  addInvalidGpp('gpp-invalid-version-2', 'gpp_version', mutateGppPart(b, 0, 0, 6, 6, 2), 'header Version = 2 instead of 1');
  addInvalidGpp('gpp-invalid-version-0', 'gpp_version', mutateGppPart(b, 0, 0, 6, 6, 0), 'header Version = 0 instead of 1');
  const two = gppBase('gpp-usnat-usca');
  const [h2, s7] = two.split('~');
  addInvalidGpp('gpp-invalid-sections-header-lists-two-one-present', 'gpp_sections', `${h2}~${s7}`,
    'header lists sections 7 and 8 but only the usnat section follows');
  const one = gppBase('gpp-usnat-opted-out-everything-gpc-true');
  const s8 = gppBase('gpp-usca-all-fields-gpc-true').split('~')[1];
  addInvalidGpp('gpp-invalid-sections-header-lists-one-two-present', 'gpp_sections', `${one}~${s8}`,
    'header lists only section 7 but a usca section follows as well');
  const three = gppBase('gpp-tcfeuv2-usnat-usca');
  addInvalidGpp('gpp-invalid-sections-header-only', 'gpp_sections', three.split('~')[0],
    'header lists sections 2, 7 and 8 and no section follows');
  const badHeader = b.split('~');
  badHeader[0] = badHeader[0].slice(0, 2) + '*' + badHeader[0].slice(3);
  addInvalidGpp('gpp-invalid-header-bad-base64', 'base64', badHeader.join('~'), "header char 2 replaced by '*'");
}
{
  const b = gppBase('gpp-usnat-all-fields-no-gpc');
  const p = b.split('~');
  const sPlus = `${p[0]}~${p[1].slice(0, 4)}+${p[1].slice(5)}`;
  addInvalidGpp('gpp-invalid-section-usnat-bad-base64', 'gpp_section', sPlus, "usnat section char 4 replaced by '+'");
  const c = gppBase('gpp-usca-all-fields-gpc-true').split('~');
  addInvalidGpp('gpp-invalid-section-usca-padding', 'gpp_section', `${c[0]}~${c[1].split('.')[0]}==.${c[1].split('.')[1]}`,
    "usca core subsection with '==' padding");
  addInvalidGpp('gpp-invalid-section-usnat-truncated', 'gpp_section', `${p[0]}~${p[1].slice(0, 5)}`,
    'usnat core cut to 5 chars (30 bits; v2 needs 70)');
  const v1 = gppBase('gpp-usnat-version-1-twelve-sensitive-categories').split('~');
  addInvalidGpp('gpp-invalid-section-usnat-v1-truncated', 'gpp_section', `${v1[0]}~${v1[1].slice(0, 9)}`,
    'usnat version 1 core cut to 9 chars (54 bits; v1 needs 60)');
  addInvalidGpp('gpp-invalid-section-usca-truncated', 'gpp_section', `${c[0]}~${c[1].split('.')[0].slice(0, 6)}.${c[1].split('.')[1]}`,
    'usca core cut to 6 chars (36 bits; needs 46)');
  addInvalidGpp('gpp-invalid-section-blank', 'gpp_section', `${p[0]}~`, 'header lists usnat but the section is blank');
  addInvalidGpp('gpp-invalid-section-usnat-version-3', 'gpp_section', mutateGppPart(b, 1, 0, 0, 6, 3), 'usnat Version = 3 (unknown)');
  const mspaOff = layoutBits(USNAT_LAYOUT[2].slice(0, USNAT_LAYOUT[2].findIndex(([n]) => n === 'MspaCoveredTransaction')));
  addInvalidGpp('gpp-invalid-section-usnat-mspa-covered-0', 'gpp_section', mutateGppPart(b, 1, 0, mspaOff, 2, 0),
    'usnat MspaCoveredTransaction = 0 (only 1 and 2 are defined)');
  const saleOff = layoutBits(USNAT_LAYOUT[2].slice(0, USNAT_LAYOUT[2].findIndex(([n]) => n === 'SaleOptOut')));
  addInvalidGpp('gpp-invalid-section-usnat-sale-opt-out-3', 'gpp_section', mutateGppPart(b, 1, 0, saleOff, 2, 3),
    'usnat SaleOptOut = 3 (undefined value)');
  const g = gppBase('gpp-usnat-opted-out-everything-gpc-true');
  addInvalidGpp('gpp-invalid-section-usnat-gpc-subsection-type-2', 'gpp_section', mutateGppPart(g, 1, 1, 0, 2, 2),
    'usnat GPC subsection with SubsectionType = 2 instead of 1');
  const t = gppBase('gpp-tcfeuv2-usnat');
  const tp = t.split('~');
  const tcfA = analyseTc(tp[1]);
  const liRaw = tcfA.core.fields.purposeLegitimateInterests.raw;
  assert(liRaw[3] === '0', 'LI 4 unset in base');
  addInvalidGpp('gpp-invalid-tcfeuv2-li-purpose-4', 'li_purpose',
    mutateGppPart(t, 1, 0, tcfA.core.fields.purposeLegitimateInterests.off, 24, parseInt(liRaw.slice(0, 3) + '1' + liRaw.slice(4), 2)),
    'tcfeuv2 section with the LI bit for purpose 4 set');
  addInvalidGpp('gpp-invalid-tcfeuv2-policy-version-3', 'policy_version',
    mutateGppPart(t, 1, 0, tcfA.core.fields.policyVersion.off, 6, 3), 'tcfeuv2 section with TcfPolicyVersion = 3');
}
out.gpp.push(...invalidGpp);

// ---------------------------------------------------------------------------
// Coverage checks (the acceptance criteria), then write the file
// ---------------------------------------------------------------------------
{
  const vt = out.tcf.filter((v) => v.valid).map((v) => v.expected);
  const vg = out.gpp.filter((v) => v.valid).map((v) => v.expected);
  const allTc = [...vt, ...vg.filter((e) => e.tcfeuv2).map((e) => e.tcfeuv2)];
  const some = (pred, what) => assert(allTc.some(pred), `coverage: ${what}`);
  some((e) => e.policy_version === 4, 'policy version 4');
  some((e) => e.policy_version === 5, 'policy version 5');
  some((e) => e.encodings.vendor_consents === 'bitfield', 'bitfield vendor consents');
  some((e) => e.encodings.vendor_consents === 'range', 'range vendor consents');
  some((e) => e.encodings.vendor_legitimate_interests === 'range', 'range vendor LI');
  some((e) => e.encodings.disclosed_vendors === 'range', 'range disclosed vendors');
  some((e) => e.encodings.disclosed_vendors === 'bitfield', 'bitfield disclosed vendors');
  const rangeEntries = [...validTcf.values()].flatMap((v) => [v.analysis.core.vendorConsents, v.analysis.core.vendorLegitimateInterests].flatMap((s) => s.entries));
  assert(rangeEntries.some((e) => e.isRange) && rangeEntries.some((e) => !e.isRange), 'coverage: single-id and multi-id range entries');
  for (const t of [0, 1, 2]) some((e) => e.publisher_restrictions.some((r) => r.restriction_type === t), `restriction type ${t}`);
  for (const p of LI_PURPOSES) some((e) => e.purpose_legitimate_interests.includes(p), `LI purpose ${p}`);
  for (const sf of [1, 2]) some((e) => e.special_feature_opt_ins.includes(sf), `special feature ${sf}`);
  some((e) => e.purpose_one_treatment, 'purpose one treatment');
  some((e) => e.use_non_standard_texts, 'non-standard texts');
  some((e) => e.disclosed_vendors !== null, 'DisclosedVendors segment');
  some((e) => e.publisher_tc && e.publisher_tc.num_custom_purposes > 0, 'custom purposes');
  some((e) => e.created_ms < DISCLOSED_VENDORS_CUTOFF_MS, 'created before the cut-off');
  some((e) => e.created_ms >= DISCLOSED_VENDORS_CUTOFF_MS, 'created after the cut-off');
  for (const e of allTc) assert(e.created_ms < DISCLOSED_VENDORS_CUTOFF_MS || e.disclosed_vendors !== null, 'valid strings after the cut-off carry DisclosedVendors');
  for (const ids of [[2], [7], [8], [2, 7], [2, 8], [7, 8], [2, 7, 8]]) assert(vg.some((e) => isDeepStrictEqual(e.section_ids, ids)), `coverage: GPP sections ${ids}`);
  for (const k of ['usnat', 'usca']) {
    assert(vg.some((e) => e[k] && e[k].Gpc === true), `${k} Gpc true`);
    assert(vg.some((e) => e[k] && e[k].Gpc === false), `${k} Gpc false`);
    assert(vg.some((e) => e[k] && !('Gpc' in e[k])), `${k} without GPC subsection`);
  }
  assert(vg.some((e) => e.usnat && e.usnat.Version === 1) && vg.some((e) => e.usnat && e.usnat.Version === 2), 'usnat v1 and v2');
  const defects = new Set([...out.tcf, ...out.gpp].filter((v) => !v.valid).map((v) => v.defect));
  for (const d of ['base64', 'truncated', 'version', 'is_service_specific', 'policy_version', 'li_purpose', 'range', 'max_vendor_id',
    'restriction_type', 'segment_type', 'duplicate_segment', 'disclosed_vendors', 'empty', 'gpp_header', 'gpp_version', 'gpp_sections', 'gpp_section']) {
    assert(defects.has(d), `coverage: defect ${d}`);
  }
  const names = [...out.tcf, ...out.gpp].map((v) => v.name);
  assertEq(names.length, new Set(names).size, 'vector names are unique');
  // Within a list strings are unique. Across lists, '' and the bare TC string given to the GPP decoder repeat on purpose.
  for (const list of [out.tcf, out.gpp]) assertEq(list.length, new Set(list.map((v) => v.string)).size, 'vector strings are unique');
  assert(names.length >= 60, 'at least 60 strings');
  assert(out.tcf.filter((v) => !v.valid).length + out.gpp.filter((v) => !v.valid).length >= 20, 'at least 20 invalid strings');
}

out.generator = {
  tcf_core: TCF_VERSION,
  gpp_cmpapi: GPP_VERSION,
  script: SCRIPT_REL,
  disclosed_vendors_required_from_ms: DISCLOSED_VENDORS_CUTOFF_MS,
  notes: [
    'Timestamps are in ms since the epoch as the libraries decode them: the 36-bit fields hold deciseconds, so values are multiples of 100.',
    'tcf[].expected.encodings and gpp[].expected.tcfeuv2.encodings give the vendor-section encoding that the encoder chose (from the IsRangeEncoding bit); null when the segment is absent.',
    'Invalid vectors: reference_decoder_accepts says whether the reference library (TCString.decode, or GppModel(...).toObject()) failed to reject the string. A strict decoder must reject every one.',
    'The tcfeuv2 section of a GPP string is a TC string (core.DisclosedVendors.PublisherTC). @iabgpp/cmpapi always writes all three segments, with empty ones when unset (IAAA, YAAAAAAAAAAA).',
    'usnat/usca values use the library field names. SensitiveDataProcessing and KnownChildSensitiveDataConsents are arrays of 2-bit values (0 N/A, 1, 2). Gpc is present only when the GPC subsection is present.',
    'The synthetic GVL used for encoding: vendors 1-3000, each declaring purposes 1-11 (consent), 2 and 7-11 (LI and flexible).',
  ],
  usnat: {
    section_id: UsNat.ID,
    library_version: UsNat.VERSION,
    core_fields_v2: USNAT_LAYOUT[2].map(([name, bits, count]) => (count ? { name, bits_each: bits, count } : { name, bits })),
    core_fields_v1: USNAT_LAYOUT[1].map(([name, bits, count]) => (count ? { name, bits_each: bits, count } : { name, bits })),
    core_bits_v2: layoutBits(USNAT_LAYOUT[2]),
    core_bits_v1: layoutBits(USNAT_LAYOUT[1]),
    gpc_subsection_fields: GPC_LAYOUT.map(([name, bits]) => ({ name: name === 'SubsectionType' ? 'GpcSegmentType' : name, bits })),
  },
  usca: {
    section_id: UsCa.ID,
    library_version: UsCa.VERSION,
    core_fields_v1: USCA_LAYOUT[1].map(([name, bits, count]) => (count ? { name, bits_each: bits, count } : { name, bits })),
    core_bits_v1: layoutBits(USCA_LAYOUT[1]),
    gpc_subsection_fields: GPC_LAYOUT.map(([name, bits]) => ({ name: name === 'SubsectionType' ? 'GpcSegmentType' : name, bits })),
  },
  gpp_library_findings: gppFindings,
};

// Key order: generator, tcf, gpp.
const ordered = { generator: out.generator, tcf: out.tcf, gpp: out.gpp };

writeJson(OUT, ordered);

const count = (list, valid) => list.filter((v) => v.valid === valid).length;
console.log(`wrote ${OUT}`);
console.log(`tcf: ${count(out.tcf, true)} valid, ${count(out.tcf, false)} invalid; gpp: ${count(out.gpp, true)} valid, ${count(out.gpp, false)} invalid`);
console.log(`TCString.decode accepts ${tcfLibAcceptsInvalid.length} invalid TC strings: ${tcfLibAcceptsInvalid.join(', ')}`);
console.log(`GppModel accepts ${gppLibAcceptsInvalid.length} invalid GPP strings: ${gppLibAcceptsInvalid.join(', ')}`);
for (const [k, v] of Object.entries(gppFindings)) console.log(`gpp finding: ${k}: ${v}`);
