//! Exact attributions for linear models read from ONNX `LinearClassifier` /
//! `LinearRegressor`: φᵢ = wᵢ (xᵢ − E[xᵢ]), with E over the background sample,
//! so that the base value is the margin at the background mean.

use super::{
    onnx::NodeProto,
    trees::{PostTransform, TreeError, operator_on_input},
};

/// One output's linear margin: w · x + b.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub post_transform: PostTransform,
}

impl Linear {
    /// Reads the margin of the scored class (`class` for classifiers) from
    /// the model's linear operator, which must read the graph input directly.
    pub fn from_onnx(bytes: &[u8], width: usize, class: usize) -> Result<Self, TreeError> {
        let node = operator_on_input(bytes, &["LinearClassifier", "LinearRegressor"])?;
        read(&node, width, class)
    }

    pub fn margin(&self, row: &[f32]) -> f64 {
        self.intercept
            + self
                .weights
                .iter()
                .zip(row)
                .map(|(w, &x)| w * f64::from(x))
                .sum::<f64>()
    }
}

fn read(node: &NodeProto, width: usize, class: usize) -> Result<Linear, TreeError> {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name() == name);
    let err = |attribute: &'static str, message: String| TreeError::Attribute {
        op: node.op_type().to_owned(),
        attribute,
        message,
    };
    let coefficients: Vec<f64> = attr("coefficients")
        .map(|a| a.floats.iter().map(|&f| f64::from(f)).collect())
        .unwrap_or_default();
    let intercepts: Vec<f64> = attr("intercepts")
        .map(|a| a.floats.iter().map(|&f| f64::from(f)).collect())
        .unwrap_or_default();
    if coefficients.is_empty() || !coefficients.len().is_multiple_of(width) {
        return Err(err(
            "coefficients",
            format!(
                "{} values do not form rows of {width} features",
                coefficients.len()
            ),
        ));
    }
    let rows = coefficients.len() / width;
    // A binary classifier may store one row (for class 1) or two.
    let row = if rows == 1 { 0 } else { class };
    if row >= rows {
        return Err(err(
            "coefficients",
            format!("has {rows} rows, no row for class {class}"),
        ));
    }
    let post = attr("post_transform")
        .map(|a| String::from_utf8_lossy(a.s()).into_owned())
        .unwrap_or_else(|| "NONE".into());
    let post_transform = match post.as_str() {
        "NONE" => PostTransform::None,
        "LOGISTIC" => PostTransform::Logistic,
        "SOFTMAX" => PostTransform::Softmax,
        "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
        "PROBIT" => PostTransform::Probit,
        other => return Err(err("post_transform", format!("{other:?} is not known"))),
    };
    Ok(Linear {
        weights: coefficients[row * width..(row + 1) * width].to_vec(),
        intercept: intercepts.get(row).copied().unwrap_or(0.0),
        post_transform,
    })
}
