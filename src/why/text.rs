//! The consumer view's words, in English and Dutch. Sentences are in the
//! second person and hedged with "may": a model's reasons are tendencies,
//! not certainties about the person.

use crate::{
    consent::policy::Tier,
    models::manifest::{DataCategory, DataSource},
};

/// The longest `language` a request may give.
const MAX_LANGUAGE_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    Nl,
}

impl Language {
    /// Every language the consumer view speaks: a manifest needs a reason
    /// template in each.
    pub const ALL: [Self; 2] = [Self::En, Self::Nl];

    /// The language to answer in, for a BCP 47 tag ("nl-BE") or an HTTP
    /// `Accept-Language` list ("de-AT,de;q=0.9,nl;q=0.8", RFC 9110 §12.5.4)
    /// as a client may pass it on: the most preferred language the view
    /// speaks, by primary subtag (RFC 4647 lookup), and English when it
    /// speaks none of them. Refuses what is no tag or list at all, saying
    /// why, so that a client's bug is not answered in a guessed language.
    pub fn negotiate(asked: &str) -> Result<Self, String> {
        if asked.len() > MAX_LANGUAGE_BYTES {
            return Err(format!(
                "is {} bytes; a language tag or Accept-Language list has at most {MAX_LANGUAGE_BYTES}",
                asked.len()
            ));
        }
        if let Some(c) = asked.chars().find(|&c| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | ',' | ';' | '=' | '.' | '*' | ' '))
        }) {
            return Err(format!(
                "contains {c:?}; a language is a BCP 47 tag (\"nl-BE\") or an Accept-Language list (\"de-AT,nl;q=0.8\")"
            ));
        }
        let mut ranked = Vec::new();
        for (i, item) in asked.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            let mut parts = item.split(';').map(str::trim);
            let tag = parts.next().unwrap_or_default();
            let mut quality = 1.0f32;
            for param in parts {
                match param.split_once('=') {
                    Some((key, value)) if key.trim().eq_ignore_ascii_case("q") => {
                        quality = value
                            .trim()
                            .parse()
                            .ok()
                            .filter(|q| (0.0..=1.0).contains(q))
                            .ok_or_else(|| {
                                format!("{item:?} has a weight outside 0 to 1 (\"q=0.8\")")
                            })?;
                    }
                    _ => return Err(format!("{item:?} has a parameter other than q")),
                }
            }
            if quality > 0.0 {
                ranked.push((quality, i, tag));
            }
        }
        // Most preferred first; among equals, the order given.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let primary = |tag: &str| tag.split(['-', '_']).next().unwrap_or_default().to_owned();
        Ok(ranked
            .iter()
            .find_map(|(_, _, tag)| {
                Self::ALL
                    .into_iter()
                    .find(|l| primary(tag).eq_ignore_ascii_case(l.tag()))
            })
            .unwrap_or(Self::En))
    }

    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Nl => "nl",
        }
    }
}

/// Words that name a GDPR Art. 9 special category, or an inference about
/// one, in the consumer view's languages: a stem matches the start of a
/// word, a `whole` word only itself ("race", not "racetrack"). Narrow on
/// purpose: a false match refuses a package at load.
const SPECIAL_CATEGORY_TERMS: &[(&str, bool)] = &[
    // English.
    ("relig", false),
    ("faith", true),
    ("church", false),
    ("catholic", false),
    ("protestant", false),
    ("muslim", false),
    ("islam", false),
    ("jewish", false),
    ("christian", false),
    ("hindu", false),
    ("buddhis", false),
    ("atheis", false),
    // Health as a condition of the person: "health" and "medical" alone
    // also name insurance products ("your health insurance with us").
    ("health condition", false),
    ("medical condition", false),
    ("medical history", false),
    ("illness", false),
    ("disease", false),
    ("disabilit", false),
    ("pregnan", false),
    ("diagnos", false),
    ("ethnic", false),
    ("racial", false),
    ("race", true),
    ("politic", false),
    ("trade union", false),
    ("sexual", false),
    ("sex life", false),
    ("gay", true),
    ("lesbian", false),
    ("transgender", false),
    ("genetic", false),
    ("biometric", false),
    // Dutch.
    ("geloof", false),
    ("godsdienst", false),
    ("kerk", false),
    ("katholiek", false),
    ("moslim", false),
    ("joods", false),
    ("christelijk", false),
    ("christen", false),
    ("hindoe", false),
    ("boeddh", false),
    ("gezondheidstoestand", false),
    ("medische aandoening", false),
    ("aandoening", false),
    ("ziekte", false),
    ("handicap", false),
    ("zwanger", false),
    ("etnisch", false),
    ("afkomst", false),
    ("ras", true),
    ("politiek", false),
    ("vakbond", false),
    ("seksue", false),
    ("geaardheid", false),
    ("homoseksu", false),
    ("genetisch", false),
    ("biometrisch", false),
];

/// The first word of `text` that names a special category, if any: a
/// reason template must not tell a person that their religion or health,
/// say, chose their ad, whatever its feature's declared category.
pub fn special_category_term(text: &str) -> Option<&'static str> {
    let words: String = text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .fold(String::from(" "), |mut all, w| {
            all.push_str(w);
            all.push(' ');
            all
        });
    SPECIAL_CATEGORY_TERMS
        .iter()
        .find(|(term, whole)| {
            let at = format!(" {term}{}", if *whole { " " } else { "" });
            words.contains(&at)
        })
        .map(|(term, _)| *term)
}

/// The sentence for a reason: its template is a phrase, whose own closing
/// punctuation, if a manifest gives one, the sentence's full stop replaces.
pub fn because(l: Language, template: &str) -> String {
    let template = template.trim().trim_end_matches(['.', '!', '?', ';', ':']);
    match l {
        Language::En => format!("You may be seeing this ad because of {template}."),
        Language::Nl => format!("Je ziet deze advertentie mogelijk vanwege {template}."),
    }
}

pub fn advertiser(l: Language, campaign: &str) -> String {
    match (l, campaign.is_empty()) {
        (Language::En, true) => {
            "The advertiser chose the kind of people this ad is meant for.".into()
        }
        (Language::En, false) => format!(
            "The advertiser chose the kind of people this ad is meant for (campaign {campaign})."
        ),
        (Language::Nl, true) => {
            "De adverteerder koos voor welk soort mensen deze advertentie bedoeld is.".into()
        }
        (Language::Nl, false) => format!(
            "De adverteerder koos voor welk soort mensen deze advertentie bedoeld is (campagne {campaign})."
        ),
    }
}

pub fn context(l: Language, placement: &str) -> String {
    match (l, placement.is_empty()) {
        (Language::En, true) => "The ad may also fit the page or app where it appears.".into(),
        (Language::En, false) => {
            format!("The ad may also fit the page or app where it appears ({placement}).")
        }
        (Language::Nl, true) => {
            "De advertentie past mogelijk ook bij de pagina of app waarin ze verschijnt.".into()
        }
        (Language::Nl, false) => format!(
            "De advertentie past mogelijk ook bij de pagina of app waarin ze verschijnt ({placement})."
        ),
    }
}

pub fn not_profiled(l: Language) -> String {
    match l {
        Language::En => "Your profile was not used to choose this ad.".into(),
        Language::Nl => "Je profiel is niet gebruikt om deze advertentie te kiezen.".into(),
    }
}

pub fn headline(l: Language, tier: Tier) -> String {
    match (l, tier) {
        (Language::En, Tier::Refused) => "No ad was chosen for you with this model".into(),
        (Language::En, _) => "Why you're seeing this ad".into(),
        (Language::Nl, Tier::Refused) => {
            "Er is met dit model geen advertentie voor je gekozen".into()
        }
        (Language::Nl, _) => "Waarom je deze advertentie ziet".into(),
    }
}

pub fn based_on(l: Language) -> &'static str {
    match l {
        Language::En => "Based on",
        Language::Nl => "Op basis van",
    }
}

pub fn placement_parameter(l: Language) -> String {
    match l {
        Language::En => "where the ad is shown".into(),
        Language::Nl => "waar de advertentie wordt getoond".into(),
    }
}

/// The main parameter that stands for what the view does not name.
pub fn withheld_parameter(l: Language) -> String {
    match l {
        Language::En => "other information about you that we do not describe here".into(),
        Language::Nl => "andere informatie over jou die we hier niet beschrijven".into(),
    }
}

/// The reason that stands for what the view does not name: sensitive
/// information, or a detail so rare it would single the person out.
pub fn withheld(l: Language) -> String {
    match l {
        Language::En => "Other information about you also made this ad more likely; we do not describe it here, to protect your privacy.".into(),
        Language::Nl => "Andere informatie over jou maakte deze advertentie ook waarschijnlijker; we beschrijven die hier niet, om je privacy te beschermen.".into(),
    }
}

/// The reason when nothing about the person made the ad more likely.
pub fn profile_against(l: Language) -> String {
    match l {
        Language::En => "Nothing we know about you made this ad more likely than for others; it was shown for the other reasons here.".into(),
        Language::Nl => "Niets wat we over je weten maakte deze advertentie waarschijnlijker dan voor anderen; ze werd getoond om de andere redenen hier.".into(),
    }
}

/// The reason for a profiling-based decision whose detailed reasons are
/// not available: the person is still told their profile was used.
pub fn profiled(l: Language) -> String {
    match l {
        Language::En => "Information about you was used to choose this ad, as your privacy choices allowed.".into(),
        Language::Nl => "Informatie over jou is gebruikt om deze advertentie te kiezen, zoals je privacykeuzes toestonden.".into(),
    }
}

/// The reason when the model that decided has since been retired.
pub fn model_retired(l: Language) -> String {
    match l {
        Language::En => "The model that chose this ad is no longer in use, so its detailed reasons cannot be shown.".into(),
        Language::Nl => "Het model dat deze advertentie koos wordt niet meer gebruikt, dus de precieze redenen kunnen niet worden getoond.".into(),
    }
}

/// A kind of information the decision rested on, as the person would
/// name it: where it came from matters (their own income, or their
/// postcode area's).
pub fn category(l: Language, c: DataCategory, source: DataSource) -> String {
    use DataCategory::*;
    let area = source == DataSource::ZipCodeAggregate;
    let (en, nl) = match c {
        FirstPartyPurchaseHistory => (
            "what you have bought from us",
            "wat je bij ons hebt gekocht",
        ),
        ZipCodeDemographics => (
            "statistics about the area of your postcode",
            "statistieken over het gebied van je postcode",
        ),
        Income if area => (
            "income statistics for your postcode area",
            "inkomensstatistieken van je postcodegebied",
        ),
        Income => ("your income", "je inkomen"),
        SocialClass if area => (
            "social statistics for your postcode area",
            "sociale statistieken van je postcodegebied",
        ),
        SocialClass => (
            "your social and economic situation",
            "je sociale en economische situatie",
        ),
        Education if area => (
            "education statistics for your postcode area",
            "opleidingsstatistieken van je postcodegebied",
        ),
        Education => ("your education", "je opleiding"),
        Occupation if area => (
            "occupation statistics for your postcode area",
            "beroepsstatistieken van je postcodegebied",
        ),
        Occupation => ("your occupation", "je beroep"),
        Age => ("your age range", "je leeftijdsgroep"),
        Contextual => (
            "the page or app you are using",
            "de pagina of app die je gebruikt",
        ),
        Device => (
            "the kind of device you use",
            "het soort apparaat dat je gebruikt",
        ),
        BrowsingActivity => (
            "your activity on this service",
            "je activiteit op deze dienst",
        ),
        CoarseLocation => ("your general location", "je globale locatie"),
        // Never shown: filtered out before they can become parameters.
        PreciseGeolocation | Religion | Health | Ethnicity | PoliticalOpinion
        | SexualOrientation | TradeUnionMembership | Genetic | Biometric => ("", ""),
    };
    // An inference about the person is said to be one.
    let estimated = source == DataSource::Inferred
        && matches!(c, Income | SocialClass | Education | Occupation);
    match (l, estimated) {
        (Language::En, false) => en.into(),
        (Language::Nl, false) => nl.into(),
        (Language::En, true) => format!("an estimate of {en}"),
        (Language::Nl, true) => format!("een schatting van {nl}"),
    }
}

/// What the person chose, as the consent line's first sentence says it.
pub enum ConsentCase {
    /// TCF purposes 1, 3 and 4 agreed to.
    TcfAgreed,
    TcfNotAgreed,
    TcfWithdrawn,
    TcfObjected,
    /// No TC string and no record: the person's choice never reached us.
    TcfNoSignal,
    /// Purpose 2 not allowed: no ad is chosen.
    TcfNoAds,
    UsNotOptedOut,
    UsOptedOut,
    /// Personalised ads (purposes 3 and 4) turned off in the ledger.
    UsPersonalisedOff,
    /// An objection to direct marketing (GDPR Art. 21): no ad is chosen.
    Objected,
    Unknown,
}

/// What else kept information about the person from the model.
pub enum ConsentAddendum {
    Minor,
    SiteChoices,
    Location,
    /// The site's own US privacy settings (MSPA service-provider mode, an
    /// opt-out notice never given) kept data from other sources out.
    SiteTerms,
}

/// The line's first sentence. `on` is the date the choice was recorded,
/// when the ledger holds it.
pub fn consent(l: Language, case: ConsentCase, place: &str, on: Option<&str>) -> String {
    use ConsentCase::*;
    let on = on.map_or(String::new(), |d| match l {
        Language::En => format!(" on {d}"),
        Language::Nl => format!(" op {d}"),
    });
    match (l, case) {
        (Language::En, TcfAgreed) => format!(
            "You agreed to personalised ads (IAB TCF purposes 1, 3 and 4) in {place}{on}."
        ),
        (Language::En, TcfNotAgreed) => format!(
            "You did not agree to personalised ads in {place}, so only limited data was used (IAB TCF purpose 2)."
        ),
        (Language::En, TcfWithdrawn) => format!(
            "You withdrew your agreement to personalised ads in {place}{on}, so only limited data was used (IAB TCF purpose 2)."
        ),
        (Language::En, TcfObjected) => format!(
            "You objected to personalised ads in {place}{on}, so only limited data was used (IAB TCF purpose 2)."
        ),
        (Language::En, TcfNoSignal) => format!(
            "No consent choice of yours for {place} reached us (IAB TCF), so this model did not choose an ad for you."
        ),
        (Language::En, TcfNoAds) => format!(
            "Your privacy choices in {place} do not allow ads to be chosen for you (IAB TCF purpose 2), so this model did not choose one."
        ),
        (Language::En, UsNotOptedOut) => format!(
            "You have not opted out of personalised ads or the sale or sharing of your data in {place}."
        ),
        (Language::En, UsOptedOut) => format!(
            "You opted out of the sale or sharing of your data or of targeted ads in {place}{on}, so information about you from other sources or other sites was not used."
        ),
        (Language::En, UsPersonalisedOff) => format!(
            "You turned off personalised ads in {place}{on}, so your profile was not used."
        ),
        (Language::En, Objected) => format!(
            "You objected to the use of your data for direct marketing{on}, so this model did not choose an ad for you."
        ),
        (Language::En, Unknown) => "No privacy rules we apply could be confirmed for where you are, so no personalised ad was chosen.".into(),
        (Language::Nl, TcfAgreed) => format!(
            "Je gaf in {place}{on} toestemming voor gepersonaliseerde advertenties (IAB TCF-doelen 1, 3 en 4)."
        ),
        (Language::Nl, TcfNotAgreed) => format!(
            "Je gaf in {place} geen toestemming voor gepersonaliseerde advertenties, dus zijn alleen beperkte gegevens gebruikt (IAB TCF-doel 2)."
        ),
        (Language::Nl, TcfWithdrawn) => format!(
            "Je trok in {place}{on} je toestemming voor gepersonaliseerde advertenties in, dus zijn alleen beperkte gegevens gebruikt (IAB TCF-doel 2)."
        ),
        (Language::Nl, TcfObjected) => format!(
            "Je maakte in {place}{on} bezwaar tegen gepersonaliseerde advertenties, dus zijn alleen beperkte gegevens gebruikt (IAB TCF-doel 2)."
        ),
        (Language::Nl, TcfNoSignal) => format!(
            "We hebben geen toestemmingskeuze van je voor {place} ontvangen (IAB TCF), dus heeft dit model geen advertentie voor je gekozen."
        ),
        (Language::Nl, TcfNoAds) => format!(
            "Je privacykeuzes in {place} staan niet toe dat er advertenties voor je worden gekozen (IAB TCF-doel 2), dus heeft dit model er geen gekozen."
        ),
        (Language::Nl, UsNotOptedOut) => format!(
            "Je hebt je in {place} niet afgemeld voor gepersonaliseerde advertenties of de verkoop of het delen van je gegevens."
        ),
        (Language::Nl, UsOptedOut) => format!(
            "Je hebt je in {place}{on} afgemeld voor de verkoop of het delen van je gegevens of voor gerichte advertenties, dus zijn gegevens over jou uit andere bronnen of van andere sites niet gebruikt."
        ),
        (Language::Nl, UsPersonalisedOff) => format!(
            "Je zette in {place}{on} gepersonaliseerde advertenties uit, dus is je profiel niet gebruikt."
        ),
        (Language::Nl, Objected) => format!(
            "Je maakte{on} bezwaar tegen het gebruik van je gegevens voor direct marketing, dus heeft dit model geen advertentie voor je gekozen."
        ),
        (Language::Nl, Unknown) => "Er konden geen privacyregels worden vastgesteld voor waar je bent, dus is er geen gepersonaliseerde advertentie gekozen.".into(),
    }
}

pub fn consent_addendum(l: Language, addendum: ConsentAddendum) -> &'static str {
    use ConsentAddendum::*;
    match (l, addendum) {
        (Language::En, Minor) => "Because you are a minor, your profile was not used.",
        (Language::En, SiteChoices) => {
            "Your choices on this site turned off personalised ads, so your profile was not used."
        }
        (Language::En, Location) => {
            "You did not allow the use of your precise location, so it was not used."
        }
        (Language::En, SiteTerms) => {
            "Under this site's privacy terms, information about you from other sources was not used."
        }
        (Language::Nl, Minor) => "Omdat je minderjarig bent, is je profiel niet gebruikt.",
        (Language::Nl, SiteTerms) => {
            "Volgens de privacyvoorwaarden van deze site zijn gegevens over jou uit andere bronnen niet gebruikt."
        }
        (Language::Nl, SiteChoices) => {
            "Je keuzes op deze site zetten gepersonaliseerde advertenties uit, dus is je profiel niet gebruikt."
        }
        (Language::Nl, Location) => {
            "Je gaf geen toestemming voor het gebruik van je precieze locatie, dus is die niet gebruikt."
        }
    }
}

/// The line's last sentence: when the choices were checked.
pub fn checked(l: Language, date: &str) -> String {
    match l {
        Language::En => format!("Checked when the ad was chosen on {date}."),
        Language::Nl => format!("Gecontroleerd toen de advertentie werd gekozen op {date}."),
    }
}

pub fn control(l: Language, kind: &str) -> String {
    let (en, nl) = match kind {
        "change_consent" => ("Change your privacy choices", "Je privacykeuzes wijzigen"),
        "opt_out_personalisation" => (
            "Turn off personalised ads",
            "Gepersonaliseerde advertenties uitzetten",
        ),
        "opt_out_sale_sharing" => (
            "Opt out of the sale or sharing of your data",
            "Je afmelden voor verkoop of delen van je gegevens",
        ),
        "access_data" => (
            "See the data we hold about you",
            "De gegevens bekijken die we over je hebben",
        ),
        "delete_data" => ("Delete your data", "Je gegevens verwijderen"),
        "withdraw_objection" => ("Withdraw your objection", "Je bezwaar intrekken"),
        _ => (
            "Object to direct marketing",
            "Bezwaar maken tegen direct marketing",
        ),
    };
    match l {
        Language::En => en.into(),
        Language::Nl => nl.into(),
    }
}

const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const MONTHS_NL: [&str; 12] = [
    "jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec",
];

/// "29 Nov 2026" (UTC).
pub fn date(l: Language, ms: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let d = t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let months = match l {
        Language::En => MONTHS_EN,
        Language::Nl => MONTHS_NL,
    };
    format!(
        "{} {} {}",
        d.day(),
        months[usize::from(d.month() as u8) - 1],
        d.year()
    )
}

pub fn procedure(l: Language) -> String {
    match l {
        Language::En => "When a website or app asks which ad to show you, it sends us information about \
you that it holds; for each decision below, the data it used lists exactly which. First we check your privacy choices: the consent you gave or withdrew, whether you opted out, \
where you are and whether you are a minor. Information your choices do not allow is replaced by an \
average for everyone before anything else happens; if your choices allow no ad to be chosen for you, \
none is. A statistical model then estimates how likely you are to be interested in the ad. For every \
such decision we record which information counted for it and how much, the choices it relied on and \
which model made it, so that we can show you why you saw an ad. We keep decisions for a limited time, \
never use sensitive information such as religion or health, and never profile minors. You can change \
your choices, object, or ask us to delete your data at any time."
            .into(),
        Language::Nl => "Wanneer een website of app ons vraagt welke advertentie je te zien krijgt, stuurt \
die ons gegevens over jou die ze heeft; bij elke beslissing hieronder staat precies welke gegevens \
ze gebruikte. Eerst controleren we je privacykeuzes: de toestemming die je gaf of introk, of \
je je afmeldde, waar je bent en of je minderjarig bent. Gegevens die je keuzes niet toestaan, worden \
vervangen door een gemiddelde voor iedereen voordat er iets anders gebeurt; staan je keuzes niet toe dat \
er een advertentie voor je wordt gekozen, dan gebeurt dat niet. Een statistisch model schat daarna hoe \
waarschijnlijk het is dat de advertentie je interesseert. Bij elke beslissing leggen we vast welke \
gegevens meetelden en hoeveel, op welke keuzes ze berustte en welk model haar nam, zodat we je kunnen \
laten zien waarom je een advertentie zag. We bewaren beslissingen een beperkte tijd, gebruiken nooit \
gevoelige gegevens zoals religie of gezondheid en maken geen profielen van minderjarigen. Je kunt je \
keuzes altijd wijzigen, bezwaar maken of ons vragen je gegevens te verwijderen."
            .into(),
    }
}

/// Said on every page of an export but the last.
pub fn more_follows(l: Language) -> &'static str {
    match l {
        Language::En => {
            "This answer holds only part of your data, because all of it is too \
much to send at once; the rest follows in the next parts of this answer."
        }
        Language::Nl => {
            "Dit antwoord bevat maar een deel van je gegevens, omdat alles te veel is \
om in één keer te versturen; de rest volgt in de volgende delen van dit antwoord."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_preferred_language_spoken_is_chosen() {
        for (asked, want) in [
            ("", Language::En),
            ("nl", Language::Nl),
            ("NL", Language::Nl),
            ("nl_BE", Language::Nl),
            ("nl-Latn-NL", Language::Nl),
            (" nl ", Language::Nl),
            ("nl;q=0.9", Language::Nl),
            ("de-AT,de;q=0.9,nl;q=0.8", Language::Nl),
            ("de-AT,de;q=0.9,nl;q=0.8,en;q=0.7", Language::Nl),
            ("en;q=0.5,nl;q=0.9", Language::Nl),
            ("nl;q=0,en", Language::En),
            ("nl, en", Language::Nl),
            ("zh-Hant-TW", Language::En),
            ("x-klingon", Language::En),
            ("*", Language::En),
        ] {
            assert_eq!(Language::negotiate(asked), Ok(want), "{asked:?}");
        }
        for (asked, says) in [
            ("nl\0", "contains"),
            ("\u{202e}nl", "contains"),
            ("\u{7}\u{1b}[31m", "contains"),
            ("nl;q=2", "weight"),
            ("nl;q=x", "weight"),
            ("nl;level=1", "parameter"),
        ] {
            let refused = Language::negotiate(asked).unwrap_err();
            assert!(refused.contains(says), "{asked:?}: {refused}");
        }
        let long = format!("nl-{}", "a".repeat(MAX_LANGUAGE_BYTES));
        assert!(Language::negotiate(&long).unwrap_err().contains("bytes"));
    }

    #[test]
    fn a_reason_is_one_sentence_whatever_its_template_ends_in() {
        assert_eq!(
            because(Language::En, " your car insurance. "),
            "You may be seeing this ad because of your car insurance."
        );
    }

    #[test]
    fn special_categories_are_found_by_word_in_either_language() {
        for (text, term) in [
            ("your religion and your health condition", "relig"),
            ("your health condition", "health condition"),
            ("the Religious make-up of your area", "relig"),
            ("your race", "race"),
            ("de ras van je hond", "ras"),
            ("je gezondheidstoestand", "gezondheidstoestand"),
            ("your trade  union membership", "trade union"),
        ] {
            assert_eq!(special_category_term(text), Some(term), "{text}");
        }
        for text in [
            "the racetrack near you",
            "your car insurance",
            "the housing figures for your postcode",
            "de verhouding tussen publieke en particuliere verzekeringen in je buurt",
            "raspberries you bought",
            "your health insurance with us",
            "de zorgverzekering die je bij ons hebt",
            "a faithful customer of ours",
            "your medical expenses insurance",
        ] {
            assert_eq!(special_category_term(text), None, "{text}");
        }
    }
}
