"""Feature metadata for the Caravan (CoIL 2000 Challenge) data set.

One entry per column of ``ISLP/data/Caravan.csv`` (85 features, in file
order; the target ``Purchase`` is not listed).  Descriptions and value ranges
follow the CoIL 2000 data dictionary (Sentient Machine Research / P. van der
Putten, "TIC" data description), whose code tables are reproduced below as
``L0`` .. ``L4``.

Per column:

* ``name``         - column name in the CSV and in the manifests
* ``description``  - plain-English meaning (internal documentation)
* ``category``     - privacy category (see ``CATEGORIES``)
* ``source``       - ``zip_code_aggregate`` (columns 1-43: derived from the
                     customer's zip code, identical for everyone in that
                     zip code) or ``first_party`` (columns 44-85: the
                     insurer's own policy data for this customer)
* ``type``         - ``categorical`` (only MOSTYPE, MOSHOOFD, both excluded,
                     so no model input is categorical) or ``integer``
* ``categories``   - allowed integer codes (categorical only, from the
                     dictionary, not just those seen in the data)
* ``min``/``max``  - allowed inclusive range (integer only)
* ``group``        - explanation group (see ``GROUPS``), ``None`` if excluded
* ``reason``       - consumer-facing reason template ``{"en": ..., "nl": ...}``,
                     a second-person noun phrase rendered as "You are seeing
                     this ad partly because of {reason}".  ``None`` for the
                     excluded columns, which must never be used to explain
                     (or make) a decision.
* ``excluded``     - ``None`` or the reason the bundled models do not use it

Range notes (data checked against the dictionary by ``train_caravan.py``):

* The A* "number of policies" columns are documented as "1 - 12", but 0
  (no policy) is by far the most common value in the data; the range is
  widened to 0..12.
* MINKGEM (average income) and MKOOPKLA (purchasing power class) fall in the
  dictionary block coded with L3 (0..9); they are ordinal classes rather
  than percentages, and the 0..9 range is kept.
* MOSTYPE code 14 ("Junior cosmopolitan") never occurs in the 5,822 rows;
  it stays an allowed category because the dictionary defines it.

Exclusions (``EXCLUDED``, 7 columns, so the models take 78):

* MGODRK, MGODPR, MGODOV, MGODGE - zip-code religion shares, proxies for a
  GDPR Art. 9 special category;
* MOSTYPE, MOSHOOFD - customer subtype / main type.  Their L0/L2 segment
  *labels* name religion or ethnicity for some codes (L0 20 "Etnically
  diverse", 30 "Religious elderly singles", 31 "Low income catholics", 39
  "Large religous families"; L2 7 "Retired and Religeous"), so the segment
  codes are proxies for GDPR Art. 9 special categories too;
* MGEMLEEF - average age, a protected attribute reserved for fairness audits.

Excluded columns keep their description, category, source and range (the
data is still checked against them) but have no group and no reason text.
``GROUPS`` is the full catalogue of explanation groups; ``groups_for`` drops
excluded members and groups left empty (``customer_type``), and
``MODEL_GROUPS`` is what the manifests list.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------

CATEGORIES = (
    "zip_code_demographics",
    "education",
    "occupation",
    "social_class",
    "income",
    "first_party_purchase_history",
    "age",
    "religion",
)

SOURCES = ("zip_code_aggregate", "first_party", "request_context")

REASON_GROUPS = ("your_info", "your_activity", "advertiser_choice", "context")

# Columns the bundled targeting models must not use, with the reason.
EXCLUDED = {
    "MGODRK": "religion: zip-code share proxy for a GDPR Art. 9 special category",
    "MGODPR": "religion: zip-code share proxy for a GDPR Art. 9 special category",
    "MGODOV": "religion: zip-code share proxy for a GDPR Art. 9 special category",
    "MGODGE": "religion: zip-code share proxy for a GDPR Art. 9 special category",
    "MGEMLEEF": "age: protected attribute reserved for fairness audits",
    "MOSTYPE": "religion/ethnicity: segment labels name religion and ethnicity "
               "(proxy for GDPR Art. 9 special categories)",
    "MOSHOOFD": "religion/ethnicity: segment labels name religion and ethnicity "
                "(proxy for GDPR Art. 9 special categories)",
}

# --------------------------------------------------------------------------
# Code tables of the CoIL 2000 data dictionary
# --------------------------------------------------------------------------

# L0: customer subtype (MOSTYPE).  Spelling as in the dictionary.
L0_CUSTOMER_SUBTYPE = {
    1: "High Income, expensive child",
    2: "Very Important Provincials",
    3: "High status seniors",
    4: "Affluent senior apartments",
    5: "Mixed seniors",
    6: "Career and childcare",
    7: "Dinki's (double income no kids)",
    8: "Middle class families",
    9: "Modern, complete families",
    10: "Stable family",
    11: "Family starters",
    12: "Affluent young families",
    13: "Young all american family",
    14: "Junior cosmopolitan",
    15: "Senior cosmopolitans",
    16: "Students in apartments",
    17: "Fresh masters in the city",
    18: "Single youth",
    19: "Suburban youth",
    20: "Etnically diverse",
    21: "Young urban have-nots",
    22: "Mixed apartment dwellers",
    23: "Young and rising",
    24: "Young, low educated",
    25: "Young seniors in the city",
    26: "Own home elderly",
    27: "Seniors in apartments",
    28: "Residential elderly",
    29: "Porchless seniors: no front yard",
    30: "Religious elderly singles",
    31: "Low income catholics",
    32: "Mixed seniors",
    33: "Lower class large families",
    34: "Large family, employed child",
    35: "Village families",
    36: "Couples with teens 'Married with children'",
    37: "Mixed small town dwellers",
    38: "Traditional families",
    39: "Large religous families",
    40: "Large family farms",
    41: "Mixed rurals",
}

# L1: average age (MGEMLEEF).
L1_AVERAGE_AGE = {
    1: "20-30 years",
    2: "30-40 years",
    3: "40-50 years",
    4: "50-60 years",
    5: "60-70 years",
    6: "70-80 years",
}

# L2: customer main type (MOSHOOFD).
L2_CUSTOMER_MAIN_TYPE = {
    1: "Successful hedonists",
    2: "Driven Growers",
    3: "Average Family",
    4: "Career Loners",
    5: "Living well",
    6: "Cruising Seniors",
    7: "Retired and Religeous",
    8: "Family with grown ups",
    9: "Conservative families",
    10: "Farmers",
}

# L3: percentage bands (zip-code shares, columns 6-43).
L3_PERCENTAGE = {
    0: "0%",
    1: "1 - 10%",
    2: "11 - 23%",
    3: "24 - 36%",
    4: "37 - 49%",
    5: "50 - 62%",
    6: "63 - 75%",
    7: "76 - 88%",
    8: "89 - 99%",
    9: "100%",
}

# L4: contribution (premium) bands in Dutch guilders (P* columns).
L4_CONTRIBUTION = {
    0: "f 0",
    1: "f 1 - 49",
    2: "f 50 - 99",
    3: "f 100 - 199",
    4: "f 200 - 499",
    5: "f 500 - 999",
    6: "f 1000 - 4999",
    7: "f 5000 - 9999",
    8: "f 10.000 - 19.999",
    9: "f 20.000 - ?",
}

# --------------------------------------------------------------------------
# Reason templates shared by several zip-code columns
# --------------------------------------------------------------------------

_R_HOUSES = {
    "en": "the housing figures for your postcode",
    "nl": "de woninggegevens van je postcode",
}
_R_HOUSEHOLD_SIZE = {
    "en": "the typical household size in your neighbourhood",
    "nl": "de gemiddelde huishoudgrootte in je buurt",
}
_R_HOUSEHOLDS = {
    "en": "the make-up of households in your neighbourhood",
    "nl": "de samenstelling van huishoudens in je buurt",
}
_R_EDUCATION = {
    "en": "the typical education level in your neighbourhood",
    "nl": "het gebruikelijke opleidingsniveau in je buurt",
}
_R_OCCUPATION = {
    "en": "the kinds of work people do in your neighbourhood",
    "nl": "het soort werk dat mensen in je buurt doen",
}
_R_SOCIAL_CLASS = {
    "en": "the socio-economic profile of your neighbourhood",
    "nl": "het sociaaleconomische profiel van je buurt",
}
_R_HOUSING = {
    "en": "the mix of rented and owner-occupied homes in your neighbourhood",
    "nl": "de verhouding tussen huur- en koopwoningen in je buurt",
}
_R_CARS = {
    "en": "car ownership in your neighbourhood",
    "nl": "het autobezit in je buurt",
}
_R_INSURANCE_MIX = {
    "en": "the mix of public and private insurance schemes in your neighbourhood",
    "nl": "de verhouding tussen publieke en particuliere verzekeringen in je buurt",
}
_R_INCOME = {
    "en": "the typical income level in your neighbourhood",
    "nl": "het gebruikelijke inkomensniveau in je buurt",
}
_R_PURCHASING_POWER = {
    "en": "the purchasing power in your neighbourhood",
    "nl": "de koopkracht in je buurt",
}


def _zip(name, description, category, group, reason, lo=0, hi=9, excluded=False):
    """A zip-code aggregate column on an integer scale (default L3 0..9)."""
    return {
        "name": name,
        "description": description,
        "category": category,
        "source": "zip_code_aggregate",
        "type": "integer",
        "min": lo,
        "max": hi,
        "group": None if excluded else group,
        "reason": None if excluded else reason,
        "excluded": EXCLUDED.get(name) if excluded else None,
    }


def _pct(what):
    return (
        f"Share of {what} in the household's zip code "
        "(L3 band: 0 = 0%, 1 = 1-10%, ..., 8 = 89-99%, 9 = 100%)"
    )


# --------------------------------------------------------------------------
# Columns 1-43: socio-demographics derived from the zip code
# --------------------------------------------------------------------------

_ZIP_COLUMNS = [
    {
        "name": "MOSTYPE",
        "description": "Customer subtype of the household's zip code (L0: 41 lifestyle segments)",
        "category": "zip_code_demographics",
        "source": "zip_code_aggregate",
        "type": "categorical",
        "categories": list(range(1, 42)),
        "group": None,
        "reason": None,
        "excluded": EXCLUDED["MOSTYPE"],
    },
    _zip(
        "MAANTHUI",
        "Number of houses (1-10), from the zip-code socio-demographic profile",
        "zip_code_demographics", "household", _R_HOUSES, 1, 10,
    ),
    _zip(
        "MGEMOMV",
        "Average household size in the household's zip code (1-6)",
        "zip_code_demographics", "household", _R_HOUSEHOLD_SIZE, 1, 6,
    ),
    _zip(
        "MGEMLEEF",
        "Average age band in the household's zip code (L1: 1 = 20-30 years ... 6 = 70-80 years)",
        "age", None, None, 1, 6, excluded=True,
    ),
    {
        "name": "MOSHOOFD",
        "description": "Customer main type of the household's zip code (L2: 10 lifestyle groups)",
        "category": "zip_code_demographics",
        "source": "zip_code_aggregate",
        "type": "categorical",
        "categories": list(range(1, 11)),
        "group": None,
        "reason": None,
        "excluded": EXCLUDED["MOSHOOFD"],
    },
    _zip("MGODRK", _pct("Roman Catholics"), "religion", None, None, excluded=True),
    _zip("MGODPR", _pct("Protestants"), "religion", None, None, excluded=True),
    _zip("MGODOV", _pct("people of another religion"), "religion", None, None, excluded=True),
    _zip("MGODGE", _pct("people without religion"), "religion", None, None, excluded=True),
    _zip("MRELGE", _pct("married people"), "zip_code_demographics", "household", _R_HOUSEHOLDS),
    _zip("MRELSA", _pct("people living together (unmarried)"), "zip_code_demographics", "household", _R_HOUSEHOLDS),
    _zip("MRELOV", _pct("other relationship types"), "zip_code_demographics", "household", _R_HOUSEHOLDS),
    _zip("MFALLEEN", _pct("single-person households"), "zip_code_demographics", "household", _R_HOUSEHOLDS),
    _zip("MFGEKIND", _pct("households without children"), "zip_code_demographics", "household", _R_HOUSEHOLDS),
    _zip("MFWEKIND", _pct("households with children"), "zip_code_demographics", "household", _R_HOUSEHOLDS),
    _zip("MOPLHOOG", _pct("people with a high level of education"), "education", "education", _R_EDUCATION),
    _zip("MOPLMIDD", _pct("people with a medium level of education"), "education", "education", _R_EDUCATION),
    _zip("MOPLLAAG", _pct("people with a lower level of education"), "education", "education", _R_EDUCATION),
    _zip("MBERHOOG", _pct("people in high-status occupations"), "occupation", "occupation", _R_OCCUPATION),
    _zip("MBERZELF", _pct("entrepreneurs"), "occupation", "occupation", _R_OCCUPATION),
    _zip("MBERBOER", _pct("farmers"), "occupation", "occupation", _R_OCCUPATION),
    _zip("MBERMIDD", _pct("people in middle management"), "occupation", "occupation", _R_OCCUPATION),
    _zip("MBERARBG", _pct("skilled labourers"), "occupation", "occupation", _R_OCCUPATION),
    _zip("MBERARBO", _pct("unskilled labourers"), "occupation", "occupation", _R_OCCUPATION),
    _zip("MSKA", _pct("social class A"), "social_class", "social_class", _R_SOCIAL_CLASS),
    _zip("MSKB1", _pct("social class B1"), "social_class", "social_class", _R_SOCIAL_CLASS),
    _zip("MSKB2", _pct("social class B2"), "social_class", "social_class", _R_SOCIAL_CLASS),
    _zip("MSKC", _pct("social class C"), "social_class", "social_class", _R_SOCIAL_CLASS),
    _zip("MSKD", _pct("social class D"), "social_class", "social_class", _R_SOCIAL_CLASS),
    _zip("MHHUUR", _pct("rented homes"), "zip_code_demographics", "housing", _R_HOUSING),
    _zip("MHKOOP", _pct("owner-occupied homes"), "zip_code_demographics", "housing", _R_HOUSING),
    _zip("MAUT1", _pct("households with 1 car"), "zip_code_demographics", "cars", _R_CARS),
    _zip("MAUT2", _pct("households with 2 cars"), "zip_code_demographics", "cars", _R_CARS),
    _zip("MAUT0", _pct("households without a car"), "zip_code_demographics", "cars", _R_CARS),
    _zip(
        "MZFONDS",
        _pct("residents insured through the public health-insurance fund "
             "('National Health Service', Dutch ziekenfonds)")
        + "; describes the insurance-scheme mix of the area, not anyone's health",
        "zip_code_demographics", "health_insurance_mix", _R_INSURANCE_MIX,
    ),
    _zip(
        "MZPART",
        _pct("residents with private health insurance")
        + "; describes the insurance-scheme mix of the area, not anyone's health",
        "zip_code_demographics", "health_insurance_mix", _R_INSURANCE_MIX,
    ),
    _zip("MINKM30", _pct("incomes below 30,000"), "income", "income", _R_INCOME),
    _zip("MINK3045", _pct("incomes of 30,000-45,000"), "income", "income", _R_INCOME),
    _zip("MINK4575", _pct("incomes of 45,000-75,000"), "income", "income", _R_INCOME),
    _zip("MINK7512", _pct("incomes of 75,000-122,000"), "income", "income", _R_INCOME),
    _zip("MINK123M", _pct("incomes above 123,000"), "income", "income", _R_INCOME),
    _zip(
        "MINKGEM",
        "Average income class of the household's zip code (ordinal 0-9, L3 block of the dictionary)",
        "income", "income", _R_INCOME,
    ),
    _zip(
        "MKOOPKLA",
        "Purchasing power class of the household's zip code (ordinal 0-9, L3 block of the dictionary)",
        "income", "income", _R_PURCHASING_POWER,
    ),
]

# --------------------------------------------------------------------------
# Columns 44-85: the insurer's own product data for the customer
# --------------------------------------------------------------------------

# (code suffix, group name, dictionary wording, consumer product name en,
#  consumer product name nl (singular, ends in "verzekering"), note)
PRODUCTS = [
    ("WAPART", "private_third_party_policies", "private third party insurance",
     "private third-party liability insurance", "aansprakelijkheidsverzekering", None),
    ("WABEDR", "firm_third_party_policies", "third party insurance (firms)",
     "business liability insurance", "bedrijfsaansprakelijkheidsverzekering", None),
    ("WALAND", "agriculture_third_party_policies", "third party insurance (agriculture)",
     "farm liability insurance", "agrarische aansprakelijkheidsverzekering", None),
    ("PERSAUT", "car_policies", "car policies",
     "car insurance", "autoverzekering", None),
    ("BESAUT", "delivery_van_policies", "delivery van policies",
     "delivery-van insurance", "bestelautoverzekering", None),
    ("MOTSCO", "motorcycle_scooter_policies", "motorcycle/scooter policies",
     "motorcycle or scooter insurance", "motor- of scooterverzekering", None),
    ("VRAAUT", "lorry_policies", "lorry policies",
     "lorry insurance", "vrachtwagenverzekering", None),
    ("AANHANG", "trailer_policies", "trailer policies",
     "trailer insurance", "aanhangerverzekering", None),
    ("TRACTOR", "tractor_policies", "tractor policies",
     "tractor insurance", "tractorverzekering", None),
    ("WERKT", "agricultural_machine_policies", "agricultural machines policies",
     "agricultural machinery insurance", "landbouwwerktuigenverzekering", None),
    ("BROM", "moped_policies", "moped policies",
     "moped insurance", "bromfietsverzekering", None),
    ("LEVEN", "life_insurance_policies", "life insurances",
     "life insurance", "levensverzekering", None),
    ("PERSONG", "private_accident_policies", "private accident insurance policies",
     "personal accident insurance", "ongevallenverzekering", None),
    ("GEZONG", "family_accident_policies", "family accidents insurance policies",
     "family accident insurance", "gezinsongevallenverzekering", None),
    ("WAOREG", "disability_policies", "disability insurance policies",
     "income-protection insurance", "inkomensverzekering",
     "Dutch WAO (work-disability benefit) top-up insurance, an "
     "income-protection product; the consumer text calls it "
     "income-protection insurance"),
    ("BRAND", "fire_policies", "fire policies",
     "fire insurance", "brandverzekering", None),
    ("ZEILPL", "surfboard_policies", "surfboard policies",
     "surfboard insurance", "surfplankverzekering", None),
    ("PLEZIER", "boat_policies", "boat policies",
     "boat insurance", "bootverzekering", None),
    ("FIETS", "bicycle_policies", "bicycle policies",
     "bicycle insurance", "fietsverzekering", None),
    ("INBOED", "property_policies", "property insurance policies",
     "home-contents insurance", "inboedelverzekering",
     "Dutch 'inboedel' is home contents"),
    ("BYSTAND", "social_security_policies", "social security insurance policies",
     "social-security insurance", "bijstandsverzekering",
     "wording of the English data dictionary; the Dutch code 'bijstand' may "
     "well mean legal-assistance insurance (rechtsbijstand)"),
]


def _first_party_columns():
    contributions, counts = [], []
    for code, group, dictionary, en, nl, note in PRODUCTS:
        suffix = f" (note: {note})" if note else ""
        contributions.append({
            "name": "P" + code,
            "description": (
                f"Contribution (yearly premium band) the customer pays for {dictionary} "
                "(L4: 0 = none, 1 = f 1-49, 2 = f 50-99, ..., 9 = f 20,000 or more)" + suffix
            ),
            "category": "first_party_purchase_history",
            "source": "first_party",
            "type": "integer",
            "min": 0,
            "max": 9,
            "group": group,
            "reason": {
                "en": f"how much you pay for your {en} with us",
                "nl": f"hoeveel je bij ons betaalt voor je {nl}",
            },
            "excluded": None,
        })
        counts.append({
            "name": "A" + code,
            "description": (
                f"Number of {dictionary} held by the customer "
                "(dictionary: 1-12; 0 = none, widened to 0-12)" + suffix
            ),
            "category": "first_party_purchase_history",
            "source": "first_party",
            "type": "integer",
            "min": 0,
            "max": 12,
            "group": group,
            "reason": {
                "en": f"the number of {en} policies you have with us",
                "nl": f"het aantal {nl}en dat je bij ons hebt",
            },
            "excluded": None,
        })
    # File order: all 21 P* columns, then all 21 A* columns.
    return contributions + counts


FEATURES = _ZIP_COLUMNS + _first_party_columns()

# --------------------------------------------------------------------------
# Explanation groups: the full catalogue.  A group may list excluded
# columns; ``groups_for`` removes them (and groups left empty) before groups
# reach a manifest, so each model feature is in exactly one model group.
# --------------------------------------------------------------------------

GROUPS = [
    {"name": "customer_type",
     "description": "Lifestyle segment and main type of the household's zip code",
     "features": ["MOSTYPE", "MOSHOOFD"]},
    {"name": "household",
     "description": "Household composition of the household's zip code",
     "features": ["MAANTHUI", "MGEMOMV", "MRELGE", "MRELSA", "MRELOV",
                  "MFALLEEN", "MFGEKIND", "MFWEKIND"]},
    {"name": "education",
     "description": "Education levels in the household's zip code",
     "features": ["MOPLHOOG", "MOPLMIDD", "MOPLLAAG"]},
    {"name": "occupation",
     "description": "Occupation mix of the household's zip code",
     "features": ["MBERHOOG", "MBERZELF", "MBERBOER", "MBERMIDD", "MBERARBG", "MBERARBO"]},
    {"name": "social_class",
     "description": "Social class distribution of the household's zip code",
     "features": ["MSKA", "MSKB1", "MSKB2", "MSKC", "MSKD"]},
    {"name": "housing",
     "description": "Rented versus owner-occupied homes in the household's zip code",
     "features": ["MHHUUR", "MHKOOP"]},
    {"name": "cars",
     "description": "Car ownership in the household's zip code",
     "features": ["MAUT1", "MAUT2", "MAUT0"]},
    {"name": "health_insurance_mix",
     "description": "Public versus private health-insurance scheme mix of the household's "
                    "zip code (an insurance type share, not health data)",
     "features": ["MZFONDS", "MZPART"]},
    {"name": "income",
     "description": "Income distribution and purchasing power of the household's zip code",
     "features": ["MINKM30", "MINK3045", "MINK4575", "MINK7512", "MINK123M",
                  "MINKGEM", "MKOOPKLA"]},
] + [
    {"name": group,
     "description": f"The customer's {en} with the insurer: premium band and number of policies",
     "features": ["P" + code, "A" + code]}
    for code, group, _dictionary, en, _nl, _note in PRODUCTS
]

BY_NAME = {f["name"]: f for f in FEATURES}
ALL_COLUMNS = [f["name"] for f in FEATURES]
MODEL_FEATURES = [f["name"] for f in FEATURES if not f["excluded"]]


def groups_for(features):
    """The explanation groups restricted to ``features``, in ``GROUPS`` order.

    Members not in ``features`` (the excluded columns) are dropped, and so
    is any group left without members."""
    keep = set(features)
    out = []
    for g in GROUPS:
        members = [n for n in g["features"] if n in keep]
        if members:
            out.append({**g, "features": members})
    return out


MODEL_GROUPS = groups_for(MODEL_FEATURES)


def validate():
    """Internal consistency checks; raises AssertionError on any problem."""
    assert len(FEATURES) == 85, len(FEATURES)
    assert len(set(ALL_COLUMNS)) == 85
    assert set(EXCLUDED) <= set(ALL_COLUMNS)
    assert len(MODEL_FEATURES) == 78, len(MODEL_FEATURES)
    for f in FEATURES:
        assert f["category"] in CATEGORIES, f
        assert f["source"] in SOURCES, f
        assert f["type"] in ("integer", "float", "categorical"), f
        if f["type"] == "categorical":
            assert f["categories"] and "min" not in f, f
        else:
            assert f["min"] <= f["max"] and "categories" not in f, f
        assert f["excluded"] == EXCLUDED.get(f["name"]), f
        if f["excluded"]:
            assert f["reason"] is None and f["group"] is None, f
        else:
            assert set(f["reason"]) == {"en", "nl"}, f
    names = [g["name"] for g in GROUPS]
    assert len(names) == len(set(names)), "duplicate group name"
    catalogue = [n for g in GROUPS for n in g["features"]]
    assert len(catalogue) == len(set(catalogue)), "column in more than one group"
    assert set(catalogue) <= set(ALL_COLUMNS), set(catalogue) - set(ALL_COLUMNS)
    for g in GROUPS:
        for n in g["features"]:
            assert BY_NAME[n]["group"] == (None if BY_NAME[n]["excluded"] else g["name"]), n
    in_group = [n for g in MODEL_GROUPS for n in g["features"]]
    assert len(in_group) == len(set(in_group)), "feature in more than one group"
    assert set(in_group) == set(MODEL_FEATURES), set(in_group) ^ set(MODEL_FEATURES)
    assert all(g["features"] for g in MODEL_GROUPS)
    for f in FEATURES:
        if not f["excluded"]:
            assert f["group"] in names, f


validate()
