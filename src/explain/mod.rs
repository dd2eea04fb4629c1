//! Per-decision feature attributions.
//!
//! Attributions are computed from the model as ONNX Runtime runs it: tree
//! ensembles are read straight from the ONNX graph ([`trees`]) and explained
//! with exact TreeSHAP ([`treeshap`]); linear models exactly from their
//! weights ([`linear`]). Each explainer is checked against ORT's own scores
//! on the package's background rows before it is trusted.

pub mod interventional;
pub mod linear;
pub mod pool;
pub mod quadrature;
pub mod sampling;
pub mod trees;
pub mod treeshap;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    inference::{Backend, OrtBackend},
    models::schema::FeatureSchema,
};

use self::{
    interventional::Interventional,
    linear::Linear,
    sampling::Scorer,
    trees::{Ensemble, PostTransform, TreeError},
    treeshap::PathDependent,
};

/// The ONNX IR schema, for reading model graphs. This is a file format, not
/// the gRPC API: its types never cross the crate's boundary.
#[allow(clippy::all, missing_docs)]
pub(crate) mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Largest |post_transform(margin) − ORT score| accepted when an explainer is
/// checked against ORT on the background rows: the graph was read right.
/// Relative beyond magnitude 1 (see [`within`]).
pub const ORT_AGREEMENT: f64 = 1e-5;

/// The agreement asked of a graph read that sums `terms` float32 values
/// (trees, or weighted features) where ORT does: [`ORT_AGREEMENT`], or the
/// rounding of that many float32 additions when larger. A regressor of 200
/// trees predicting ~778 is off by ~1.4e-5 relatively in ORT's float32 sum,
/// while the float64 reading is right.
fn agreement_tolerance(terms: usize) -> f64 {
    ORT_AGREEMENT.max(terms as f64 * f64::from(f32::EPSILON))
}

/// Whether `value` is within `tolerance` of `reference`: absolutely for
/// scores up to magnitude 1 (probabilities), relatively beyond. ORT sums a
/// tree ensemble in float32, so its rounding grows with the output: a
/// regressor predicting 155 differs from a float64 sum by ~1e-5 however
/// right the reading is. A NaN on either side is never within.
pub fn within(value: f64, reference: f64, tolerance: f64) -> bool {
    (value - reference).abs() <= tolerance * reference.abs().max(1.0)
}

/// How a model's decisions are explained.
#[derive(Debug)]
pub enum Explainer {
    /// Exact path-dependent TreeSHAP with covers from the background sample.
    Tree {
        shap: PathDependent,
        interventional: Interventional,
        output: usize,
        /// Whether the path-dependent covers came from the native model
        /// (the training data) rather than from the background sample.
        trained_covers: bool,
    },
    /// Exact linear attributions against the background mean.
    Linear {
        model: Linear,
        mean: Vec<f64>,
        base: f64,
    },
    /// Any other graph: Shapley values of its score against background
    /// rows, exact for few features, else sampled with a standard error.
    Sampling {
        /// The background sample.
        references: Vec<f32>,
        /// The model's mean score over it: the base value of sampled
        /// values (enumeration's is its first rows' mean).
        expected: f64,
        width: usize,
        /// Antithetic pairs per decision: the package's budget.
        pairs: usize,
    },
}

/// Antithetic permutation pairs per sampled explanation, unless the package
/// sets its own budget.
pub const SAMPLING_PAIRS: usize = 64;

/// The attributions of one row, in margin space.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    pub method: &'static str,
    pub method_version: &'static str,
    /// What the margin is: "log_odds" under a logistic post-transform,
    /// "softmax_logit" under a softmax (the explained class's logit),
    /// "probit" under a probit, "raw" with none.
    pub output_space: &'static str,
    /// The expected margin: what the model outputs on average.
    pub base_value: f64,
    /// The model's margin for this row, computed from the graph.
    pub margin: f64,
    /// One contribution per feature, in column order.
    pub contributions: Vec<f64>,
    /// Standard error of each contribution; empty when exact.
    pub standard_errors: Vec<f64>,
    /// |base + Σφ − margin|; for sampled values, what the pairs' own
    /// additivity left over before they were held to the base (see
    /// `sampling::Estimate::residual`).
    pub residual: f64,
    /// Permutation pairs the estimator used; zero for exact methods.
    pub sample_pairs: usize,
    /// post_transform(margin) and post_transform(base): the probability view.
    pub score: f64,
    pub base_score: f64,
    pub compute: Duration,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Graph(#[from] TreeError),
    #[error(
        "the attribution method reads the graph differently from ONNX Runtime: background row {row} scores {ours} here and {ort} in ORT"
    )]
    Disagrees { row: usize, ours: f64, ort: f64 },
    #[error("covers sidecar: {0}")]
    Covers(String),
    #[error("post_transform {0:?} is not supported for linear attributions yet")]
    Unsupported(PostTransform),
}

impl Explainer {
    /// Sets the model-agnostic estimator's per-decision budget (the
    /// package's `explanation.sample_pairs`); exact explainers have none.
    pub fn with_sample_pairs(mut self, budget: Option<usize>) -> Self {
        if let (Self::Sampling { pairs, .. }, Some(n)) = (&mut self, budget) {
            *pairs = n;
        }
        self
    }

    /// Builds the explainer for a graph: exact where the graph is a tree
    /// ensemble or linear model on the input features, model-agnostic
    /// otherwise. `covers` are node covers from the native model, keyed by
    /// ONNX (tree id, node id). `scored` is the graph output the score is read
    /// from and `output` its column, `background` the package's rows
    /// (row-major) and `ort_scores` ORT's scores for them.
    ///
    /// A graph the exact readers cannot take whole (a scaler before the
    /// trees, a calibration after them, an aggregate that is not a sum, a
    /// reading that does not reproduce ORT's scores) is explained by
    /// sampling through ORT itself rather than refused: its attributions
    /// are then estimates with standard errors, and the method says so. A
    /// covers file that does not fit the graph is the package's mistake and
    /// is refused. Beside the explainer comes why the exact readers did not
    /// take the graph, for the loader to report under the package's name.
    pub fn for_graph(
        onnx: &[u8],
        width: usize,
        scored: &str,
        output: usize,
        background: &[f32],
        ort_scores: &[f32],
        covers: Option<&HashMap<(i64, i64), f64>>,
    ) -> Result<(Self, Option<ExplainError>), ExplainError> {
        match Self::exact(onnx, width, scored, output, background, ort_scores, covers) {
            Ok(Some(exact)) => Ok((exact, None)),
            Ok(None) => Ok((Self::sampling(background, ort_scores, width), None)),
            Err(e @ ExplainError::Covers(_)) => Err(e),
            Err(e) => Ok((Self::sampling(background, ort_scores, width), Some(e))),
        }
    }

    /// The exact explainer for a graph that is a tree ensemble or a linear
    /// model on the input features, checked against ORT's scores; `None`
    /// when the graph has neither.
    fn exact(
        onnx: &[u8],
        width: usize,
        scored: &str,
        output: usize,
        background: &[f32],
        ort_scores: &[f32],
        covers: Option<&HashMap<(i64, i64), f64>>,
    ) -> Result<Option<Self>, ExplainError> {
        let explainer = match Ensemble::from_onnx(onnx, width) {
            Ok(mut ensemble) => {
                // Covers from the native model describe the training data;
                // without them, the background sample stands in.
                match covers {
                    Some(covers) => ensemble.set_covers(covers).map_err(ExplainError::Covers)?,
                    None => ensemble.cover_from_rows(background),
                }
                let output = if ensemble.outputs == 1 { 0 } else { output };
                let reference = background
                    [..background.len().min(INTERVENTIONAL_BACKGROUND_ROWS * width)]
                    .to_vec();
                Self::Tree {
                    interventional: Interventional::new(ensemble.clone(), reference),
                    shap: PathDependent::new(ensemble),
                    output,
                    trained_covers: covers.is_some(),
                }
            }
            Err(TreeError::NoEnsemble) => match Linear::from_onnx(onnx, width, output, scored) {
                Ok(model) => {
                    if !matches!(
                        model.post_transform,
                        PostTransform::None | PostTransform::Logistic
                    ) {
                        return Err(ExplainError::Unsupported(model.post_transform));
                    }
                    let rows = (background.len() / width).max(1) as f64;
                    let mut mean = vec![0.0; width];
                    for row in background.chunks(width) {
                        for (m, &x) in mean.iter_mut().zip(row) {
                            *m += f64::from(x) / rows;
                        }
                    }
                    let base = model.intercept
                        + model
                            .weights
                            .iter()
                            .zip(&mean)
                            .map(|(w, m)| w * m)
                            .sum::<f64>();
                    Self::Linear { model, mean, base }
                }
                Err(TreeError::NoEnsemble) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let tolerance = agreement_tolerance(match &explainer {
            Self::Tree { shap, .. } => shap.ensemble().trees.len(),
            _ => width,
        });
        for (row, (x, &ort)) in background.chunks(width).zip(ort_scores).enumerate() {
            let ours = explainer.row_score(x);
            if !within(ours, f64::from(ort), tolerance) {
                return Err(ExplainError::Disagrees {
                    row,
                    ours,
                    ort: f64::from(ort),
                });
            }
        }
        Ok(Some(explainer))
    }

    /// The model-agnostic estimator: it runs ORT itself, so there is no
    /// reading of the graph to check.
    fn sampling(background: &[f32], ort_scores: &[f32], width: usize) -> Self {
        let expected =
            ort_scores.iter().map(|&s| f64::from(s)).sum::<f64>() / ort_scores.len().max(1) as f64;
        Self::Sampling {
            references: background.to_vec(),
            expected,
            width,
            pairs: SAMPLING_PAIRS,
        }
    }

    /// Changes when a method's answers do: "2" for sampled values since
    /// they start from the whole background's mean (before, the mean of
    /// the references drawn), so that stored explanations of either kind
    /// can be told apart.
    pub fn method_version(&self) -> &'static str {
        if self.stops_at_deadline() { "2" } else { "1" }
    }

    pub fn method(&self, method: Method) -> &'static str {
        match (self, method) {
            (Self::Tree { .. }, Method::PathDependent) => "tree_shap_path_dependent",
            (Self::Tree { .. }, Method::Interventional) => "tree_shap_interventional",
            (Self::Linear { .. }, _) => "linear_exact",
            (Self::Sampling { width, .. }, _) if *width <= sampling::EXACT_MAX_FEATURES => {
                "shapley_exact_enumeration"
            }
            (Self::Sampling { .. }, _) => "shapley_permutation_antithetic",
        }
    }

    /// The score ORT reports for `row`, recomputed from the graph.
    fn row_score(&self, row: &[f32]) -> f64 {
        match self {
            Self::Tree { shap, output, .. } => {
                let e = shap.ensemble();
                e.transform(&e.margins(row), *output)
            }
            Self::Linear { model, .. } => linear_score(model, model.margin(row)),
            Self::Sampling { .. } => {
                unreachable!("sampling explainers are not checked against ORT")
            }
        }
    }

    /// The units of this explainer's attributions (`Attribution.output_space`).
    pub fn output_space(&self) -> &'static str {
        let post = match self {
            Self::Tree { shap, .. } => shap.ensemble().post_transform,
            Self::Linear { model, .. } => model.post_transform,
            Self::Sampling { .. } => return "score",
        };
        match post {
            PostTransform::Logistic => "log_odds",
            // The class's logit: its score is the softmax over every class,
            // not a function of this margin alone.
            PostTransform::Softmax | PostTransform::SoftmaxZero => "softmax_logit",
            PostTransform::Probit => "probit",
            PostTransform::None => "raw",
        }
    }

    /// Explains one validated row (column order, float32 as the model sees it).
    /// `scorer` runs the model for explainers that need its outputs.
    /// A `deadline` cuts the model-agnostic estimator's budget short; exact
    /// methods ignore it.
    pub fn explain(
        &self,
        row: &[f32],
        method: Method,
        scorer: &mut dyn Scorer,
        deadline: Option<Instant>,
    ) -> Result<Attribution, String> {
        let mut explained = self.explain_rows(&[row], method, scorer, deadline)?;
        Ok(explained.pop().expect("one row in, one attribution out"))
    }

    /// Whether the explainer stops at its deadline with an estimate (the
    /// sampled one), rather than take the time its rows need.
    pub fn stops_at_deadline(&self) -> bool {
        matches!(self, Self::Sampling { width, .. } if *width > sampling::EXACT_MAX_FEATURES)
    }

    /// Whether rows explained together cost less than one by one.
    pub fn walks_blocks(&self, method: Method) -> bool {
        matches!((self, method), (Self::Tree { .. }, Method::PathDependent))
    }

    /// [`Self::explain`] for many rows at once, which path-dependent
    /// TreeSHAP walks in blocks. Each attribution reports its share of the
    /// compute time.
    pub fn explain_rows(
        &self,
        rows: &[&[f32]],
        method: Method,
        scorer: &mut dyn Scorer,
        deadline: Option<Instant>,
    ) -> Result<Vec<Attribution>, String> {
        let start = Instant::now();
        let solved: Vec<Solved> = match self {
            Self::Tree {
                shap,
                interventional,
                output,
                ..
            } => {
                let e = shap.ensemble();
                // (φ, expected margins, the row's margins)
                let games: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = match method {
                    Method::PathDependent => shap
                        .explain_rows(rows)
                        .into_iter()
                        .map(|r| (r.phi, r.expected, r.margin))
                        .collect(),
                    Method::Interventional => rows
                        .iter()
                        .map(|row| {
                            let expected = interventional.expected().to_vec();
                            (interventional.explain(row), expected, e.margins(row))
                        })
                        .collect(),
                };
                games
                    .into_iter()
                    .map(|(phi, expected, margins)| Solved {
                        base_value: expected[*output],
                        contributions: phi
                            .iter()
                            .skip(*output)
                            .step_by(e.outputs)
                            .copied()
                            .collect(),
                        margin: margins[*output],
                        score: e.transform(&margins, *output),
                        base_score: e.transform(&expected, *output),
                        standard_errors: Vec::new(),
                        sample_pairs: 0,
                        residual: None,
                    })
                    .collect()
            }
            Self::Linear { model, mean, base } => rows
                .iter()
                .map(|row| {
                    let margin = model.margin(row);
                    Solved {
                        base_value: *base,
                        contributions: model
                            .weights
                            .iter()
                            .zip(*row)
                            .zip(mean)
                            .map(|((w, &x), m)| w * (f64::from(x) - m))
                            .collect(),
                        margin,
                        score: linear_score(model, margin),
                        base_score: linear_score(model, *base),
                        standard_errors: Vec::new(),
                        sample_pairs: 0,
                        residual: None,
                    }
                })
                .collect(),
            Self::Sampling {
                references,
                expected,
                width,
                pairs,
            } => rows
                .iter()
                .map(|row| {
                    let budget = sampling::Budget {
                        pairs: *pairs,
                        deadline,
                    };
                    let e = sampling::explain(
                        scorer,
                        row,
                        references,
                        *width,
                        *expected,
                        budget,
                        seed(row),
                    )?;
                    Ok(Solved {
                        base_value: e.base,
                        contributions: e.phi,
                        margin: e.value,
                        score: e.value,
                        base_score: e.base,
                        standard_errors: e.standard_error,
                        sample_pairs: e.pairs,
                        // Enumeration's values add up by construction:
                        // its residual is the sum's own.
                        residual: (e.pairs > 0).then_some(e.residual),
                    })
                })
                .collect::<Result<_, String>>()?,
        };
        let compute = start.elapsed() / u32::try_from(rows.len().max(1)).unwrap_or(u32::MAX);
        Ok(solved
            .into_iter()
            .map(|s| Attribution {
                method: self.method(method),
                method_version: self.method_version(),
                output_space: self.output_space(),
                residual: s.residual.unwrap_or_else(|| {
                    (s.base_value + s.contributions.iter().sum::<f64>() - s.margin).abs()
                }),
                base_value: s.base_value,
                margin: s.margin,
                sample_pairs: s.sample_pairs,
                score: s.score,
                base_score: s.base_score,
                contributions: s.contributions,
                standard_errors: s.standard_errors,
                compute,
            })
            .collect())
    }
}

/// What an explainer's game gives one row, before it becomes an
/// [`Attribution`].
struct Solved {
    base_value: f64,
    contributions: Vec<f64>,
    margin: f64,
    score: f64,
    base_score: f64,
    standard_errors: Vec<f64>,
    sample_pairs: usize,
    /// What the method's own additivity leaves over, where it is not
    /// |base + Σφ − margin|.
    residual: Option<f64>,
}

/// Lets the model-agnostic estimator run the model on one session slot.
pub struct SlotScorer<'a> {
    pub backend: &'a OrtBackend,
    pub slot: usize,
}

impl Scorer for SlotScorer<'_> {
    fn score(&mut self, rows: &[f32]) -> Result<Vec<f32>, String> {
        self.backend
            .predict(self.slot, rows)
            .map_err(|e| e.to_string())
    }
}

/// A seed derived from the row, so the same row always gets the same sample.
fn seed(row: &[f32]) -> u64 {
    row.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
    })
}

fn linear_score(model: &Linear, margin: f64) -> f64 {
    match model.post_transform {
        PostTransform::Logistic => 1.0 / (1.0 + (-margin).exp()),
        _ => margin,
    }
}

/// When a request wants its attributions, and computed how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExplainMode {
    /// Computed from the decision's sealed inputs on the first request for
    /// its explanation.
    #[default]
    None,
    Inline(Method),
    /// Computed in the background after the response.
    Deferred(Method),
}

/// Which Shapley game a tree model's attributions solve. Linear models have
/// one answer for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Method {
    /// Against the trees' own covers (the training distribution).
    #[default]
    PathDependent,
    /// Against the package's background sample, feature by feature.
    Interventional,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PathDependent => "path_dependent",
            Self::Interventional => "interventional",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::PathDependent, Self::Interventional]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Background rows used by interventional TreeSHAP; its cost is linear in
/// this number (shap caps a background at 100 rows too).
pub const INTERVENTIONAL_BACKGROUND_ROWS: usize = 100;

/// One feature's part in a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureContribution {
    pub name: String,
    /// The value as the model saw it.
    pub value: f32,
    pub contribution: f64,
    /// Zero when the method is exact.
    pub standard_error: f64,
    /// The consent policy replaced the person's value with its background
    /// expectation; `value` is what the model saw.
    pub masked: bool,
}

/// A group's part: the sum of its members' contributions, never an average.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupContribution {
    pub name: String,
    pub contribution: f64,
    pub features: Vec<String>,
}

/// A decision's attributions, with the names and groups of its model.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionAttribution {
    pub attribution: Attribution,
    pub features: Vec<FeatureContribution>,
    pub groups: Vec<GroupContribution>,
    /// |post_transform(margin) − the score ORT returned for this request|.
    pub ort_difference: f64,
}

impl DecisionAttribution {
    /// Names the contributions of `attribution` for `row` by the model's
    /// columns (in position order) and sums them by its groups.
    pub fn new(
        attribution: Attribution,
        row: &[f32],
        schema: &FeatureSchema,
        ort_score: f64,
    ) -> Self {
        let columns = schema.columns();
        let features: Vec<FeatureContribution> = columns
            .iter()
            .zip(row)
            .zip(&attribution.contributions)
            .enumerate()
            .map(|(i, ((spec, &value), &contribution))| FeatureContribution {
                name: spec.name.clone(),
                value,
                contribution,
                standard_error: attribution.standard_errors.get(i).copied().unwrap_or(0.0),
                masked: false,
            })
            .collect();
        let groups = schema
            .groups()
            .iter()
            .map(|g| GroupContribution {
                name: g.name.clone(),
                contribution: g
                    .members
                    .iter()
                    .map(|&i| attribution.contributions[i])
                    .sum(),
                features: g.members.iter().map(|&i| columns[i].name.clone()).collect(),
            })
            .collect();
        let ort_difference = (attribution.score - ort_score).abs();
        Self {
            attribution,
            features,
            groups,
            ort_difference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Explainer, ORT_AGREEMENT, agreement_tolerance,
        onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto},
        within,
    };

    fn node(op: &str, input: &str, output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: vec![input.into()],
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    fn floats(name: &str, values: &[f32]) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            floats: values.to_vec(),
            ..Default::default()
        }
    }

    fn model(node: Vec<NodeProto>) -> Vec<u8> {
        prost::Message::encode_to_vec(&ModelProto {
            graph: Some(GraphProto {
                node,
                input: vec![ValueInfoProto {
                    name: Some("input".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// score = 0.5 + 2 x0 - x1, read from `input`.
    fn linear(input: &str) -> NodeProto {
        node(
            "LinearRegressor",
            input,
            "variable",
            vec![
                floats("coefficients", &[2.0, -1.0]),
                floats("intercepts", &[0.5]),
            ],
        )
    }

    #[test]
    fn a_graph_the_exact_readers_cannot_take_whole_is_sampled() {
        let background: Vec<f32> = (0..8).flat_map(|i| [i as f32, 1.0 - i as f32]).collect();
        let ort: Vec<f32> = background
            .chunks(2)
            .map(|r| 0.5 + 2.0 * r[0] - r[1])
            .collect();
        let explainer = |graph: &[u8], ort: &[f32]| {
            Explainer::for_graph(graph, 2, "variable", 0, &background, ort, None).unwrap()
        };
        let plain = model(vec![linear("input")]);
        assert!(matches!(
            explainer(&plain, &ort),
            (Explainer::Linear { .. }, None)
        ));
        // A scaler before the model: its weights are not about the input.
        let scaled = model(vec![
            node(
                "Scaler",
                "input",
                "scaled",
                vec![floats("scale", &[2.0, 2.0])],
            ),
            linear("scaled"),
        ]);
        let (sampled, why) = explainer(&scaled, &ort);
        assert!(matches!(sampled, Explainer::Sampling { .. }));
        // Said of the operator the graph has, not of a tree ensemble.
        let why = why.expect("the reason the graph is sampled").to_string();
        assert!(
            why.starts_with("the LinearRegressor reads \"scaled\""),
            "{why}"
        );
        // A reading that does not reproduce ORT's scores.
        let other: Vec<f32> = ort.iter().map(|s| s + 1.0).collect();
        assert!(matches!(
            explainer(&plain, &other),
            (Explainer::Sampling { .. }, Some(_))
        ));
    }

    #[test]
    fn agreement_is_absolute_up_to_one_and_relative_beyond() {
        assert_eq!(agreement_tolerance(1), ORT_AGREEMENT);
        assert_eq!(agreement_tolerance(78), ORT_AGREEMENT);
        assert!(within(778.0098, 777.9990, agreement_tolerance(200)));
        assert!(!within(778.0098, 777.9990, agreement_tolerance(100)));
        assert!(within(0.5 + 9e-6, 0.5, 1e-5));
        assert!(!within(0.5 + 2e-5, 0.5, 1e-5));
        // A regressor's float32 sum against a float64 one.
        assert!(within(-155.027_373, -155.027_359, 1e-5));
        assert!(!within(-155.1, -155.0, 1e-5));
        assert!(!within(f64::NAN, 1.0, 1e-5));
        assert!(!within(1.0, f64::NAN, 1e-5));
    }
}
