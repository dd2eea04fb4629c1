//! The model package manifest (`manifest.toml`): what a model is for, who owns
//! it, and the truth about every input feature.
//!
//! The manifest is the contract that later stages rely on: consent policy reads
//! the purposes and data categories, explanations read the feature
//! descriptions, groups and reason templates. It is parsed strictly (unknown
//! keys are errors) and validated on its own here; the checks against the ONNX
//! graph live in [`super::package`].

use std::collections::{BTreeMap, HashSet};

use semver::Version;
use serde::Deserialize;

/// The one manifest schema this build understands.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub model: ModelSection,
    pub training: Option<Training>,
    #[serde(default)]
    pub metrics: Vec<Metric>,
    pub features: Vec<FeatureSpec>,
    #[serde(default)]
    pub groups: Vec<FeatureGroup>,
    #[serde(default)]
    pub explanation: ExplanationSettings,
    /// The fairness audit the validation gate runs, and the thresholds it
    /// must pass.
    pub fairness: Option<FairnessSettings>,
}

/// The package's fairness audit: its data set and declared thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessSettings {
    /// The audit data set, a CSV file inside the package folder: the model's
    /// features by name, the group columns and, optionally, the label.
    pub data: String,
    /// The column holding the observed outcome (0/1); without it the audit
    /// reports no equal-opportunity difference or observed rates.
    pub label_column: Option<String>,
    /// Why the thresholds are what they are, shown with the results.
    pub note: Option<String>,
    pub groups: Vec<FairnessGroup>,
}

/// One audited attribute and the thresholds its groups must meet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessGroup {
    /// The data set's column naming each row's group. It is never a model
    /// input.
    pub column: String,
    /// The model input this column bands, when it does (e.g. an income band
    /// of an income input): the audit then says that the model sees it.
    pub bands: Option<String>,
    /// Lowest accepted selection-rate ratio of any group to the most
    /// favoured one (the four-fifths rule is 0.8).
    pub min_disparate_impact: f64,
    /// Largest accepted true-positive-rate gap between groups, when the data
    /// set has labels.
    pub max_equal_opportunity_difference: Option<f64>,
}

/// How this model's decisions are attributed, where the package may choose.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplanationSettings {
    /// Antithetic permutation pairs the model-agnostic estimator may spend
    /// per decision (default 64); a request's deadline can cut it short.
    pub sample_pairs: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    pub version: Version,
    /// Marks the version served when a request names no version. When no
    /// version of a model claims it, the highest version is the default.
    #[serde(default)]
    pub default: bool,
    pub description: String,
    pub owner: String,
    pub purposes: Vec<Purpose>,
    pub intended_use: String,
    pub input: InputSection,
    pub output: OutputSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// Name of the ONNX graph input: a float32 tensor of shape [N, features].
    pub tensor: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Name of the ONNX graph output that holds the score.
    pub tensor: String,
    /// Column of that output holding the score (e.g. 1 = P(class 1)).
    #[serde(default)]
    pub index: usize,
    pub description: String,
    /// The score at or above which the ad is shown.
    pub decision_threshold: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    pub dataset: String,
    pub date: String,
    pub script: String,
    pub train_rows: Option<u64>,
    pub holdout_rows: Option<u64>,
    pub split: Option<String>,
    #[serde(default)]
    pub excluded_columns: Vec<String>,
    #[serde(default)]
    pub libraries: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub dataset: String,
}

/// What a model's output is used for. The consent policy maps each purpose to
/// the legal bases it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    PersonalisedAdvertising,
    ContextualAdvertising,
    PersonalisedContent,
    Measurement,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PersonalisedAdvertising => "personalised_advertising",
            Self::ContextualAdvertising => "contextual_advertising",
            Self::PersonalisedContent => "personalised_content",
            Self::Measurement => "measurement",
        }
    }

    pub fn is_advertising(self) -> bool {
        matches!(
            self,
            Self::PersonalisedAdvertising | Self::ContextualAdvertising
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    Float,
    Integer,
    Categorical,
}

impl FeatureType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Integer => "integer",
            Self::Categorical => "categorical",
        }
    }
}

/// What kind of personal data a feature carries. The first group are ordinary
/// categories; the second are GDPR Art. 9 special categories, which must never
/// serve advertising (DSA Art. 26(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataCategory {
    FirstPartyPurchaseHistory,
    ZipCodeDemographics,
    Income,
    SocialClass,
    Education,
    Occupation,
    Age,
    Contextual,
    Device,
    BrowsingActivity,
    CoarseLocation,
    PreciseGeolocation,
    Religion,
    Health,
    Ethnicity,
    PoliticalOpinion,
    SexualOrientation,
    TradeUnionMembership,
    Genetic,
    Biometric,
}

impl DataCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstPartyPurchaseHistory => "first_party_purchase_history",
            Self::ZipCodeDemographics => "zip_code_demographics",
            Self::Income => "income",
            Self::SocialClass => "social_class",
            Self::Education => "education",
            Self::Occupation => "occupation",
            Self::Age => "age",
            Self::Contextual => "contextual",
            Self::Device => "device",
            Self::BrowsingActivity => "browsing_activity",
            Self::CoarseLocation => "coarse_location",
            Self::PreciseGeolocation => "precise_geolocation",
            Self::Religion => "religion",
            Self::Health => "health",
            Self::Ethnicity => "ethnicity",
            Self::PoliticalOpinion => "political_opinion",
            Self::SexualOrientation => "sexual_orientation",
            Self::TradeUnionMembership => "trade_union_membership",
            Self::Genetic => "genetic",
            Self::Biometric => "biometric",
        }
    }

    /// GDPR Art. 9(1) special categories of personal data.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Self::Religion
                | Self::Health
                | Self::Ethnicity
                | Self::PoliticalOpinion
                | Self::SexualOrientation
                | Self::TradeUnionMembership
                | Self::Genetic
                | Self::Biometric
        )
    }
}

/// Where a feature's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    FirstParty,
    ZipCodeAggregate,
    RequestContext,
    Inferred,
}

impl DataSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstParty => "first_party",
            Self::ZipCodeAggregate => "zip_code_aggregate",
            Self::RequestContext => "request_context",
            Self::Inferred => "inferred",
        }
    }
}

/// Which heading a consumer-facing reason appears under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonGroup {
    YourInfo,
    YourActivity,
    AdvertiserChoice,
    Context,
}

impl ReasonGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::YourInfo => "your_info",
            Self::YourActivity => "your_activity",
            Self::AdvertiserChoice => "advertiser_choice",
            Self::Context => "context",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    pub position: usize,
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// Allowed integer codes of a categorical feature.
    #[serde(default)]
    pub categories: Vec<i64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub missing_allowed: bool,
    pub description: String,
    pub category: DataCategory,
    /// A declared proxy: a feature that stands in for a special category
    /// although its own category is ordinary.
    pub proxy_for: Option<DataCategory>,
    pub source: DataSource,
    pub reason_group: Option<ReasonGroup>,
    /// Consumer-facing reason templates by language tag.
    #[serde(default)]
    pub reason: BTreeMap<String, String>,
}

impl FeatureSpec {
    /// True when the manifest bounds every value the feature may take: a
    /// category list, or both a minimum and a maximum.
    pub fn is_bounded(&self) -> bool {
        self.kind == FeatureType::Categorical
            || !self.categories.is_empty()
            || (self.min.is_some() && self.max.is_some())
    }

    /// True when the feature is, or stands in for, an Art. 9 special category.
    pub fn is_special_category(&self) -> bool {
        self.category.is_special() || self.proxy_for.is_some_and(DataCategory::is_special)
    }

    /// True when the feature is, or stands in for, a precise location
    /// (a coarse block that pinpoints a home): it is masked and kept back as
    /// a precise location is.
    pub fn is_precise_geolocation(&self) -> bool {
        [Some(self.category), self.proxy_for].contains(&Some(DataCategory::PreciseGeolocation))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureGroup {
    pub name: String,
    pub description: String,
    pub features: Vec<String>,
}

/// A manifest problem, located by its field path (e.g. `features[3].position`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The longest reason template, in characters: a reason is a phrase.
pub const MAX_REASON_CHARS: usize = 200;

/// A reason template is the phrase the consumer view completes into a
/// sentence ("You may be seeing this ad because of <template>.") and shows
/// as written, to the person and on their terminal (`candor why`).
pub(crate) fn check_reason(template: &str, special: bool) -> Result<(), String> {
    if template.trim().is_empty() || template.chars().any(crate::printable::unprintable) {
        return Err("must be printable text, not empty or invisible".into());
    }
    let chars = template.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(format!(
            "is {chars} characters; a reason is a phrase of at most {MAX_REASON_CHARS}"
        ));
    }
    if let Some(c) = template
        .chars()
        .find(|c| matches!(c, '<' | '>' | '{' | '}'))
    {
        return Err(format!(
            "contains {c:?}: a reason is shown as written, so it takes no markup or placeholders"
        ));
    }
    // A special-category feature's reason is never shown (the view masks
    // it); any other reason is, so it must not name one.
    if !special && let Some(term) = crate::why::special_category_term(template) {
        return Err(format!(
            "names a special category ({term:?}): the consumer view never tells a person that religion, health, ethnicity or another GDPR Art. 9 category chose their ad; declare the feature's category (or proxy_for) if that is what it is"
        ));
    }
    Ok(())
}

/// A fairness gate's lowest accepted disparate-impact ratio.
pub fn disparate_impact_floor(ratio: f64) -> Result<f64, &'static str> {
    if ratio > 0.0 && ratio <= 1.0 {
        Ok(ratio)
    } else {
        Err("must lie in (0, 1]")
    }
}

/// A fairness gate's largest accepted equal-opportunity difference.
pub fn opportunity_gap(difference: f64) -> Result<f64, &'static str> {
    if (0.0..=1.0).contains(&difference) {
        Ok(difference)
    } else {
        Err("must lie in [0, 1]")
    }
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Manifest {
    /// Parses and validates a manifest's TOML text.
    pub fn from_toml(text: &str) -> Result<Self, FieldError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            FieldError::new(format!("line {at}"), e.message().trim().to_owned())
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what TOML types alone cannot: consistency between fields.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(n) = self.explanation.sample_pairs
            && !(2..=1_000_000).contains(&n)
        {
            return Err(FieldError::new(
                "explanation.sample_pairs",
                format!("is {n}; it must lie in 2..=1000000"),
            ));
        }
        if self.schema_version != SCHEMA_VERSION {
            return Err(FieldError::new(
                "schema_version",
                format!(
                    "is {}, this build reads version {SCHEMA_VERSION}",
                    self.schema_version
                ),
            ));
        }
        let valid_name = !self.model.name.is_empty()
            && self
                .model
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(FieldError::new(
                "model.name",
                format!(
                    "{:?} must be non-empty lower-case ASCII letters, digits, '-' or '_'",
                    self.model.name
                ),
            ));
        }
        if !self.model.version.build.is_empty() {
            return Err(FieldError::new(
                "model.version",
                format!(
                    "{} carries build metadata, which SemVer leaves out when versions are ordered (§10): it and {}.{}.{} would be one version; name the version without it",
                    self.model.version,
                    self.model.version.major,
                    self.model.version.minor,
                    self.model.version.patch
                ),
            ));
        }
        if self.model.purposes.is_empty() {
            return Err(FieldError::new(
                "model.purposes",
                "must name at least one purpose",
            ));
        }
        if let Some(twice) = (1..self.model.purposes.len())
            .find(|&i| self.model.purposes[..i].contains(&self.model.purposes[i]))
        {
            return Err(FieldError::new(
                "model.purposes",
                format!("names {} twice", self.model.purposes[twice].as_str()),
            ));
        }
        // The model card and DescribeModel tell these to whoever relies on
        // the model: who answers for it, and what it is.
        let training_dataset = self.training.as_ref().map(|t| &t.dataset);
        for (field, value) in [
            ("model.owner", Some(&self.model.owner)),
            ("model.description", Some(&self.model.description)),
            ("model.intended_use", Some(&self.model.intended_use)),
            (
                "model.output.description",
                Some(&self.model.output.description),
            ),
            ("training.dataset", training_dataset),
        ] {
            if let Some(value) = value
                && (value.trim().is_empty() || value.chars().any(crate::printable::unprintable))
            {
                return Err(FieldError::new(
                    field,
                    "must be printable text, not empty or invisible",
                ));
            }
        }
        if let Some((i, m)) = self.metrics.iter().enumerate().find(|(i, m)| {
            self.metrics[..*i]
                .iter()
                .any(|o| o.name == m.name && o.dataset == m.dataset)
        }) {
            return Err(FieldError::new(
                format!("metrics[{i}]"),
                format!("{} on {} is given twice", m.name, m.dataset),
            ));
        }
        if let Some((i, m)) = self
            .metrics
            .iter()
            .enumerate()
            .find(|(_, m)| !m.value.is_finite())
        {
            return Err(FieldError::new(
                format!("metrics[{i}].value"),
                format!("is {}; a measured metric is a finite number", m.value),
            ));
        }
        if self.model.input.tensor.is_empty() {
            return Err(FieldError::new("model.input.tensor", "must not be empty"));
        }
        if self.model.output.tensor.is_empty() {
            return Err(FieldError::new("model.output.tensor", "must not be empty"));
        }
        if let Some(t) = self.model.output.decision_threshold
            && !t.is_finite()
        {
            return Err(FieldError::new(
                "model.output.decision_threshold",
                format!("is {t}; it must be finite"),
            ));
        }
        if self.features.is_empty() {
            return Err(FieldError::new(
                "features",
                "must declare at least one feature",
            ));
        }
        self.validate_features()?;
        if let Some(training) = &self.training {
            for (field, rows) in [
                ("training.train_rows", training.train_rows),
                ("training.holdout_rows", training.holdout_rows),
            ] {
                if rows == Some(0) {
                    return Err(FieldError::new(
                        field,
                        "is 0; give the rows the model was trained or measured on, or leave it out",
                    ));
                }
            }
        }
        // Compared as a reader would: " MAANTHUI" and "maanthui" name
        // MAANTHUI.
        let column = |name: &str| name.trim().to_lowercase();
        if let Some(training) = &self.training
            && let Some(twice) = (1..training.excluded_columns.len()).find(|&i| {
                training.excluded_columns[..i]
                    .iter()
                    .any(|c| column(c) == column(&training.excluded_columns[i]))
            })
        {
            return Err(FieldError::new(
                "training.excluded_columns",
                format!("names {:?} twice", training.excluded_columns[twice]),
            ));
        }
        if let Some(training) = &self.training
            && let Some(f) = self.features.iter().find(|f| {
                training
                    .excluded_columns
                    .iter()
                    .any(|c| column(c) == column(&f.name))
            })
        {
            return Err(FieldError::new(
                "training.excluded_columns",
                format!(
                    "names {:?}, which is declared as an input: a column kept out of training cannot be one of the model's inputs",
                    f.name
                ),
            ));
        }
        self.validate_groups()?;
        self.validate_fairness()?;
        self.refuse_special_categories_for_advertising()
    }

    /// GDPR Art. 9 data, and declared proxies for it, never serve advertising
    /// (DSA Art. 26(3)).
    /// The features that are, or stand in for, a special category, each as
    /// "name (category)".
    pub fn special_categories(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|f| f.is_special_category())
            .map(|f| {
                format!(
                    "{} ({})",
                    f.name,
                    f.proxy_for.unwrap_or(f.category).as_str()
                )
            })
            .collect()
    }

    pub fn refuse_special_categories_for_advertising(&self) -> Result<(), FieldError> {
        let Some(purpose) = self.model.purposes.iter().find(|p| p.is_advertising()) else {
            return Ok(());
        };
        let special = self.special_categories();
        if special.is_empty() {
            return Ok(());
        }
        Err(FieldError::new(
            "features",
            format!(
                "special-category data may not serve {}: {}",
                purpose.as_str(),
                special.join(", ")
            ),
        ))
    }

    fn validate_features(&self) -> Result<(), FieldError> {
        let mut names = HashSet::new();
        let mut positions = vec![false; self.features.len()];
        for (i, f) in self.features.iter().enumerate() {
            let at = |field: &str| format!("features[{i}].{field}");
            if f.name.is_empty() {
                return Err(FieldError::new(at("name"), "must not be empty"));
            }
            if !names.insert(f.name.as_str()) {
                return Err(FieldError::new(
                    at("name"),
                    format!("{:?} is declared twice", f.name),
                ));
            }
            match positions.get_mut(f.position) {
                Some(seen @ false) => *seen = true,
                Some(true) => {
                    return Err(FieldError::new(
                        at("position"),
                        format!("{} is used twice", f.position),
                    ));
                }
                None => {
                    return Err(FieldError::new(
                        at("position"),
                        format!(
                            "{} is outside 0..{} (positions must be contiguous)",
                            f.position,
                            self.features.len()
                        ),
                    ));
                }
            }
            if f.description.trim().is_empty() {
                return Err(FieldError::new(
                    at("description"),
                    "must describe the feature in plain language",
                ));
            }
            for (language, template) in &f.reason {
                check_reason(template, f.is_special_category())
                    .map_err(|m| FieldError::new(at(&format!("reason.{language}")), m))?;
            }
            // A proxy is read only for what the policy must keep back
            // beyond the feature's own category: any other value would be
            // taken and then ignored.
            if let Some(proxy) = f.proxy_for
                && !proxy.is_special()
                && proxy != DataCategory::PreciseGeolocation
            {
                return Err(FieldError::new(
                    at("proxy_for"),
                    format!(
                        "{:?} is neither a special category nor precise_geolocation, the only categories a proxy is declared for; give what the feature is as its category",
                        proxy.as_str()
                    ),
                ));
            }
            match f.kind {
                FeatureType::Categorical => {
                    if f.categories.is_empty() {
                        return Err(FieldError::new(
                            at("categories"),
                            "a categorical feature must list its codes",
                        ));
                    }
                    if let Some(twice) = (1..f.categories.len())
                        .find(|&i| f.categories[..i].contains(&f.categories[i]))
                    {
                        return Err(FieldError::new(
                            at("categories"),
                            format!("lists {} twice", f.categories[twice]),
                        ));
                    }
                    if f.min.is_some() || f.max.is_some() {
                        return Err(FieldError::new(
                            at("min"),
                            "a categorical feature takes categories, not a range",
                        ));
                    }
                }
                FeatureType::Float | FeatureType::Integer => {
                    if !f.categories.is_empty() {
                        return Err(FieldError::new(
                            at("categories"),
                            "only categorical features take categories",
                        ));
                    }
                    for (field, bound) in [("min", f.min), ("max", f.max)] {
                        if bound.is_some_and(|b| !b.is_finite()) {
                            return Err(FieldError::new(at(field), "must be finite"));
                        }
                    }
                    if let (Some(lo), Some(hi)) = (f.min, f.max)
                        && lo > hi
                    {
                        return Err(FieldError::new(
                            at("min"),
                            format!("{lo} is greater than max {hi}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_groups(&self) -> Result<(), FieldError> {
        let known: HashSet<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
        let mut grouped = HashSet::new();
        let mut group_names = HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            if !group_names.insert(g.name.as_str()) {
                return Err(FieldError::new(
                    format!("groups[{i}].name"),
                    format!("{:?} is declared twice", g.name),
                ));
            }
            if g.features.is_empty() {
                return Err(FieldError::new(
                    format!("groups[{i}].features"),
                    "must list at least one feature",
                ));
            }
            for member in &g.features {
                if !known.contains(member.as_str()) {
                    return Err(FieldError::new(
                        format!("groups[{i}].features"),
                        format!("{member:?} is not a declared feature"),
                    ));
                }
                if !grouped.insert(member.as_str()) {
                    return Err(FieldError::new(
                        format!("groups[{i}].features"),
                        format!("{member:?} already belongs to another group"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_fairness(&self) -> Result<(), FieldError> {
        let Some(fairness) = &self.fairness else {
            return Ok(());
        };
        let plain_file = !fairness.data.is_empty()
            && std::path::Path::new(&fairness.data)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain_file {
            return Err(FieldError::new(
                "fairness.data",
                format!(
                    "{:?} must be a file inside the package folder",
                    fairness.data
                ),
            ));
        }
        if fairness.groups.is_empty() {
            return Err(FieldError::new(
                "fairness.groups",
                "must name at least one group column",
            ));
        }
        let inputs: HashSet<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
        for (i, g) in fairness.groups.iter().enumerate() {
            let at = |field: &str| format!("fairness.groups[{i}].{field}");
            // The live monitor counts the column under this name, which
            // requests must be able to send (`context.audit_attributes`).
            crate::monitor::check_name(&g.column)
                .map_err(|m| FieldError::new(at("column"), format!("{:?}: {m}", g.column)))?;
            disparate_impact_floor(g.min_disparate_impact)
                .map_err(|m| FieldError::new(at("min_disparate_impact"), m))?;
            if let Some(gap) = g.max_equal_opportunity_difference {
                opportunity_gap(gap)
                    .map_err(|m| FieldError::new(at("max_equal_opportunity_difference"), m))?;
            }
            if let Some(input) = &g.bands
                && !inputs.contains(input.as_str())
            {
                return Err(FieldError::new(
                    at("bands"),
                    format!("{input:?} is not a model input"),
                ));
            }
        }
        Ok(())
    }

    /// Features in tensor column order.
    pub fn features_by_position(&self) -> Vec<&FeatureSpec> {
        let mut features: Vec<&FeatureSpec> = self.features.iter().collect();
        features.sort_by_key(|f| f.position);
        features
    }
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A manifest for unit tests: the model sections every test shares,
/// followed by the test's own `rest` (a string literal).
#[cfg(test)]
macro_rules! test_manifest {
    ($rest:literal) => {
        concat!(
            r#"
schema_version = 1
[model]
name = "m"
version = "1.0.0"
description = "d"
owner = "o"
purposes = ["personalised_advertising"]
intended_use = "u"
[model.input]
tensor = "input"
[model.output]
tensor = "probabilities"
index = 1
description = "p"
"#,
            $rest
        )
    };
}
#[cfg(test)]
pub(crate) use test_manifest;

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = test_manifest!(
        r#"[[features]]
name = "a"
position = 0
type = "integer"
min = 0
max = 9
description = "a"
category = "income"
source = "zip_code_aggregate"
[[features]]
name = "b"
position = 1
type = "categorical"
categories = [1, 2]
description = "b"
category = "education"
source = "zip_code_aggregate"
"#
    );

    /// A manifest that contradicts itself, or leaves out who answers for
    /// the model, is refused naming the field: a religion column declared
    /// as an input while the training section says it was kept out passed
    /// every check and served.
    #[test]
    fn a_manifest_that_contradicts_itself_is_refused() {
        // MINIMAL with `toml` before its features.
        let before_features =
            |toml: &str| MINIMAL.replacen("[[features]]", &format!("{toml}[[features]]"), 1);
        // ... and a [training] section ending in `line`.
        let training = |line: &str| {
            before_features(&format!(
                "[training]\ndataset = \"d\"\ndate = \"2026-01-01\"\nscript = \"s\"\n{line}\n"
            ))
        };
        let cases = [
            (
                training("excluded_columns = [\"MGODRK\", \"a\"]"),
                "training.excluded_columns",
                "\"a\"",
            ),
            (
                MINIMAL.replace("categories = [1, 2]", "categories = [1, 2, 1]"),
                "features[1].categories",
                "lists 1 twice",
            ),
            (
                MINIMAL.replace(
                    "[\"personalised_advertising\"]",
                    "[\"measurement\", \"measurement\"]",
                ),
                "model.purposes",
                "names measurement twice",
            ),
            (
                MINIMAL.replace("version = \"1.0.0\"", "version = \"1.0.0+build.7\""),
                "model.version",
                "build metadata",
            ),
            (training("train_rows = 0"), "training.train_rows", "is 0"),
            (
                MINIMAL.replace("owner = \"o\"", "owner = \" \""),
                "model.owner",
                "not empty or invisible",
            ),
            (
                MINIMAL.replace("owner = \"o\"", "owner = \"\u{200B}\""),
                "model.owner",
                "not empty or invisible",
            ),
            (
                MINIMAL.replace("description = \"d\"", "description = \"\""),
                "model.description",
                "not empty or invisible",
            ),
            (
                MINIMAL.replace("description = \"p\"", "description = \" \""),
                "model.output.description",
                "not empty or invisible",
            ),
            (
                training("excluded_columns = [\" A\"]"),
                "training.excluded_columns",
                "\"a\"",
            ),
            (
                training("excluded_columns = [\"X\", \"x\"]"),
                "training.excluded_columns",
                "twice",
            ),
            (
                before_features(
                    "[[metrics]]\nname = \"auc\"\nvalue = 0.7\ndataset = \"holdout\"\n[[metrics]]\nname = \"auc\"\nvalue = 0.8\ndataset = \"holdout\"\n",
                ),
                "metrics[1]",
                "given twice",
            ),
            (
                before_features(
                    "[[metrics]]\nname = \"auc\"\nvalue = nan\ndataset = \"holdout\"\n",
                ),
                "metrics[0].value",
                "is NaN",
            ),
        ];
        for (text, field, says) in cases {
            let err = Manifest::from_toml(&text).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(says), "{err}");
        }
    }

    /// A reason template is shown to the person as written: it must be a
    /// short plain phrase that never names a special category unless its
    /// feature is declared one (and so never shown).
    #[test]
    fn reason_templates_are_plain_phrases_naming_no_special_category() {
        let with_reason = |en: &str| {
            MINIMAL.replacen(
                "category = \"income\"",
                &format!(
                    "category = \"income\"\nreason = {{ en = {}, nl = \"je inkomen\" }}",
                    toml::Value::String(en.to_owned())
                ),
                1,
            )
        };
        Manifest::from_toml(&with_reason("your income band")).unwrap();
        let long = "a".repeat(MAX_REASON_CHARS + 1);
        for (en, says) in [
            (
                "your religion and your health",
                "names a special category (\"relig\")",
            ),
            ("your income\u{1b}[31m", "printable"),
            ("\u{202e}your income", "printable"),
            ("", "printable"),
            (long.as_str(), "at most 200"),
            ("<b>your income</b>", "no markup"),
            ("your {feature}", "placeholders"),
        ] {
            let err = Manifest::from_toml(&with_reason(en)).unwrap_err();
            assert_eq!(err.field, "features[0].reason.en", "{en:?}: {err}");
            assert!(err.message.contains(says), "{en:?}: {err}");
        }
        // A feature declared a proxy for religion may say so: the view
        // never shows its reason.
        let proxy = with_reason("the religious make-up of your area").replacen(
            "category = \"income\"",
            "category = \"zip_code_demographics\"\nproxy_for = \"religion\"",
            1,
        );
        let err = Manifest::from_toml(&proxy).unwrap_err();
        assert_ne!(err.field, "features[0].reason.en", "{err}");
    }

    #[test]
    fn parses_a_minimal_manifest() {
        let m = Manifest::from_toml(MINIMAL).unwrap();
        assert_eq!(m.features_by_position()[1].name, "b");
        assert!(!m.features[1].is_special_category());
    }

    #[test]
    fn refuses_special_categories_and_their_proxies_for_advertising() {
        let religion = MINIMAL.replace("category = \"education\"", "category = \"religion\"");
        let err = Manifest::from_toml(&religion).unwrap_err();
        assert_eq!(err.field, "features");
        assert!(err.message.contains("b (religion)"), "{err}");

        let proxy = MINIMAL.replace(
            "category = \"education\"",
            "category = \"education\"\nproxy_for = \"ethnicity\"",
        );
        assert!(
            Manifest::from_toml(&proxy)
                .unwrap_err()
                .message
                .contains("b (ethnicity)")
        );

        let measurement = religion.replace("[\"personalised_advertising\"]", "[\"measurement\"]");
        assert!(Manifest::from_toml(&measurement).is_ok());
    }

    /// A proxy is declared for a special category or a precise location;
    /// any other would be taken and ignored.
    #[test]
    fn a_proxy_for_an_ordinary_category_is_refused() {
        let declare = |proxy: &str| {
            MINIMAL.replace(
                "category = \"education\"",
                &format!("category = \"education\"\nproxy_for = \"{proxy}\""),
            )
        };
        for ordinary in ["browsing_activity", "age", "contextual"] {
            let err = Manifest::from_toml(&declare(ordinary)).unwrap_err();
            assert_eq!(err.field, "features[1].proxy_for", "{ordinary}: {err}");
            assert!(err.message.contains(ordinary), "{err}");
        }
        assert!(Manifest::from_toml(&declare("precise_geolocation")).is_ok());
    }

    #[test]
    fn a_decision_threshold_must_be_finite() {
        for value in ["nan", "inf", "-inf"] {
            let text = MINIMAL.replace(
                "description = \"p\"",
                &format!("description = \"p\"\ndecision_threshold = {value}"),
            );
            let err = Manifest::from_toml(&text).unwrap_err();
            assert_eq!(
                err.field, "model.output.decision_threshold",
                "{value}: {err}"
            );
        }
        let text = MINIMAL.replace(
            "description = \"p\"",
            "description = \"p\"\ndecision_threshold = 0.2",
        );
        assert!(Manifest::from_toml(&text).is_ok());
    }

    #[test]
    fn rejects_unknown_keys_with_their_line() {
        let text = MINIMAL.replace("owner = \"o\"", "owner = \"o\"\ncolour = \"red\"");
        let err = Manifest::from_toml(&text).unwrap_err();
        assert!(err.message.contains("colour"), "{err}");
        assert_eq!(err.field, "line 8");
    }

    #[test]
    fn names_the_field_of_a_consistency_error() {
        let cases = [
            (
                MINIMAL.replace("position = 1", "position = 0"),
                "features[1].position",
            ),
            (
                MINIMAL.replace("position = 1", "position = 7"),
                "features[1].position",
            ),
            (
                MINIMAL.replace("name = \"b\"", "name = \"a\""),
                "features[1].name",
            ),
            (MINIMAL.replace("min = 0", "min = 10"), "features[0].min"),
            (
                MINIMAL.replace("categories = [1, 2]", "categories = []"),
                "features[1].categories",
            ),
            (
                MINIMAL.replace("schema_version = 1", "schema_version = 2"),
                "schema_version",
            ),
            (
                MINIMAL.replace("name = \"m\"", "name = \"M x\""),
                "model.name",
            ),
            (
                MINIMAL.replace("[\"personalised_advertising\"]", "[]"),
                "model.purposes",
            ),
            (
                format!(
                    "{MINIMAL}\n[[groups]]\nname = \"g\"\ndescription = \"g\"\nfeatures = [\"zz\"]\n"
                ),
                "groups[0].features",
            ),
        ];
        let fairness = |data: &str, min: &str, bands: &str| {
            format!(
                "{MINIMAL}\n[fairness]\ndata = \"{data}\"\n[[fairness.groups]]\ncolumn = \"age\"\nbands = \"{bands}\"\nmin_disparate_impact = {min}\n"
            )
        };
        assert!(Manifest::from_toml(&fairness("audit.csv", "0.8", "a")).is_ok());
        let fairness_cases = [
            (fairness("../audit.csv", "0.8", "a"), "fairness.data"),
            (
                fairness("audit.csv", "1.5", "a"),
                "fairness.groups[0].min_disparate_impact",
            ),
            (
                fairness("audit.csv", "0.8", "zz"),
                "fairness.groups[0].bands",
            ),
            // The live monitor could never be sent this name.
            (
                fairness("audit.csv", "0.8", "a").replace("\"age\"", "\"Age\""),
                "fairness.groups[0].column",
            ),
        ];
        for (text, field) in cases.into_iter().chain(fairness_cases) {
            assert_eq!(Manifest::from_toml(&text).unwrap_err().field, field);
        }
    }
}
