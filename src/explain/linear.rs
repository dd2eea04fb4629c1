//! Exact attributions for linear models read from ONNX: a `LinearClassifier`
//! / `LinearRegressor`, or a graph that is only a linear layer (`MatMul` by
//! a constant, then `Add` of one if biased, or one `Gemm`, with an optional
//! `Sigmoid`):
//! φᵢ = wᵢ (xᵢ − E[xᵢ]), with E over the background sample, so that the base
//! value is the margin at the background mean.

use std::collections::HashMap;

use super::{
    onnx::{GraphProto, NodeProto, TensorProto},
    trees::{PostTransform, TreeError, decode_graph, operator_on_input, tensor_values},
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
    /// A graph of another shape is `NoEnsemble`: not read as linear.
    /// `scored` names the graph output the score is read from.
    pub fn from_onnx(
        bytes: &[u8],
        width: usize,
        class: usize,
        scored: &str,
    ) -> Result<Self, TreeError> {
        let graph = decode_graph(bytes)?;
        match operator_on_input(&graph, &["LinearClassifier", "LinearRegressor"]) {
            Ok(node) => read(node, width, class),
            Err(TreeError::NoEnsemble) => {
                layer(&graph, width, class, scored).ok_or(TreeError::NoEnsemble)
            }
            Err(e) => Err(e),
        }
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
    let post_transform = PostTransform::from_onnx(&post)
        .ok_or_else(|| err("post_transform", format!("{post:?} is not known")))?;
    Ok(Linear {
        weights: coefficients[row * width..(row + 1) * width].to_vec(),
        intercept: intercepts.get(row).copied().unwrap_or(0.0),
        post_transform,
    })
}

/// A graph that is nothing but `input · W + b` (`MatMul` and `Add`, or one
/// `Gemm`; b may be absent), optionally through `Sigmoid`, with W and b
/// constants, scored at the graph output `scored`: column `column` of it
/// (the only one when there is one) as a [`Linear`]. `None` for any other
/// graph, or a layer whose constants cannot be read: the model-agnostic
/// estimator explains those.
fn layer(graph: &GraphProto, width: usize, column: usize, scored: &str) -> Option<Linear> {
    let constants: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let input = graph.input.first().map(|i| i.name()).unwrap_or_default();
    let nodes: Vec<&NodeProto> = graph.node.iter().collect();
    let ((weights, bias, columns, last), rest) = match nodes.as_slice() {
        [matmul, rest @ ..] if matmul.op_type() == "MatMul" => {
            let w = constant_input(matmul, 1, input, &constants)?;
            let (weights, columns) = matrix(w, width, false)?;
            match rest {
                [add, rest @ ..] if add.op_type() == "Add" => {
                    let b = other_constant(add, matmul, &constants)?;
                    ((weights, vector(b, columns, 1.0)?, columns, *add), rest)
                }
                // A layer without bias.
                _ => ((weights, vec![0.0; columns], columns, *matmul), rest),
            }
        }
        [gemm, rest @ ..] if gemm.op_type() == "Gemm" => {
            let attr = |name: &str| gemm.attribute.iter().find(|a| a.name() == name);
            let w = constant_input(gemm, 1, input, &constants)?;
            if attr("transA").is_some_and(|a| a.i() != 0) {
                return None;
            }
            let transposed = attr("transB").is_some_and(|a| a.i() != 0);
            let alpha = f64::from(attr("alpha").map_or(1.0, |a| a.f()));
            let beta = f64::from(attr("beta").map_or(1.0, |a| a.f()));
            let (mut weights, columns) = matrix(w, width, transposed)?;
            weights.iter_mut().for_each(|w| *w *= alpha);
            // C is optional; a named C must be a constant.
            let bias = match gemm.input.get(2).filter(|c| !c.is_empty()) {
                None => vec![0.0; columns],
                Some(c) => vector(constants.get(c.as_str())?, columns, beta)?,
            };
            ((weights, bias, columns, *gemm), rest)
        }
        _ => return None,
    };
    fn output(n: &NodeProto) -> Option<&str> {
        n.output.first().map(String::as_str)
    }
    // The score is the layer's output, or the Sigmoid's after it; a graph
    // that exposes both may score either.
    let post_transform = match rest {
        [] => (output(last) == Some(scored)).then_some(PostTransform::None)?,
        [sigmoid]
            if sigmoid.op_type() == "Sigmoid" && sigmoid.input.first() == last.output.first() =>
        {
            if output(sigmoid) == Some(scored) {
                PostTransform::Logistic
            } else if output(last) == Some(scored) {
                PostTransform::None
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let column = if columns == 1 { 0 } else { column };
    (column < columns).then(|| Linear {
        weights: (0..width).map(|i| weights[i * columns + column]).collect(),
        intercept: bias[column],
        post_transform,
    })
}

/// Input `index` of `node` when the node reads the graph input first and
/// that input is a constant.
fn constant_input<'a>(
    node: &NodeProto,
    index: usize,
    graph_input: &str,
    constants: &HashMap<&str, &'a TensorProto>,
) -> Option<&'a TensorProto> {
    if node.input.first().map(String::as_str) != Some(graph_input) {
        return None;
    }
    constants.get(node.input.get(index)?.as_str()).copied()
}

/// The constant `add` adds to the output of `from`.
fn other_constant<'a>(
    add: &NodeProto,
    from: &NodeProto,
    constants: &HashMap<&str, &'a TensorProto>,
) -> Option<&'a TensorProto> {
    let produced = from.output.first()?;
    match add.input.as_slice() {
        [a, b] if a == produced => constants.get(b.as_str()).copied(),
        [a, b] if b == produced => constants.get(a.as_str()).copied(),
        _ => None,
    }
}

/// The weight matrix as `width` rows of its columns (row-major), and the
/// number of columns; a vector is one column. `None` unless the shape fits.
fn matrix(t: &TensorProto, width: usize, transposed: bool) -> Option<(Vec<f64>, usize)> {
    let data = tensor_values(t)?;
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let (rows, columns) = match (dims.as_slice(), transposed) {
        ([rows], false) => (*rows, 1),
        ([rows, columns], false) | ([columns, rows], true) => (*rows, *columns),
        _ => return None,
    };
    if rows != width || columns == 0 || rows.checked_mul(columns)? != data.len() {
        return None;
    }
    if !transposed {
        return Some((data, columns));
    }
    let mut weights = vec![0.0; data.len()];
    for c in 0..columns {
        for r in 0..rows {
            weights[r * columns + c] = data[c * rows + r];
        }
    }
    Some((weights, columns))
}

/// The bias as one value per column, scaled: a scalar, or a vector along
/// the last axis (every other axis of size one). `None` for other shapes.
fn vector(t: &TensorProto, columns: usize, scale: f64) -> Option<Vec<f64>> {
    let data = tensor_values(t)?;
    let (last, others) = t.dims.split_last().unwrap_or((&1, &[]));
    if others.iter().any(|&d| d != 1) {
        return None;
    }
    match (usize::try_from(*last).ok()?, data.len()) {
        (1, 1) => Some(vec![data[0] * scale; columns]),
        (n, len) if n == columns && len == columns => {
            Some(data.into_iter().map(|b| b * scale).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::onnx::ValueInfoProto;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|&i| i.into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(1),
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>, constants: Vec<TensorProto>) -> GraphProto {
        GraphProto {
            node: nodes,
            initializer: constants,
            input: vec![ValueInfoProto {
                name: Some("x".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// One column and a scalar bias: the column is the score whatever the
    /// manifest's output index, and the bias broadcasts.
    #[test]
    fn a_matmul_and_add_is_read_as_its_column() {
        let g = graph(
            vec![
                node("MatMul", &["x", "w"], "xw"),
                node("Add", &["b", "xw"], "y"),
            ],
            vec![
                tensor("w", &[3, 1], &[0.5, -1.0, 2.0]),
                tensor("b", &[], &[0.25]),
            ],
        );
        let linear = layer(&g, 3, 1, "y").unwrap();
        assert_eq!(linear.weights, vec![0.5, -1.0, 2.0]);
        assert_eq!(
            (linear.intercept, linear.post_transform),
            (0.25, PostTransform::None)
        );
        assert_eq!(linear.margin(&[1.0, 1.0, 1.0]), 1.75);
    }

    /// Layers without a bias: a bare `MatMul`, and a `Gemm` with no C, with
    /// transB and alpha; both through `Sigmoid`.
    #[test]
    fn layers_without_bias_are_read() {
        let sigmoid = || node("Sigmoid", &["z"], "y");
        let matmul = graph(
            vec![node("MatMul", &["x", "w"], "z"), sigmoid()],
            vec![tensor("w", &[2, 1], &[1.5, -0.5])],
        );
        let gemm = graph(
            vec![
                NodeProto {
                    attribute: vec![
                        crate::explain::onnx::AttributeProto {
                            name: Some("transB".into()),
                            i: Some(1),
                            ..Default::default()
                        },
                        crate::explain::onnx::AttributeProto {
                            name: Some("alpha".into()),
                            f: Some(3.0),
                            ..Default::default()
                        },
                    ],
                    ..node("Gemm", &["x", "w"], "z")
                },
                sigmoid(),
            ],
            vec![tensor("w", &[1, 2], &[0.5, -0.5 / 3.0])],
        );
        for g in [matmul, gemm] {
            let linear = layer(&g, 2, 0, "y").unwrap();
            assert_eq!(linear.intercept, 0.0);
            assert_eq!(linear.post_transform, PostTransform::Logistic);
            let margin = linear.margin(&[2.0, 2.0]);
            assert!((margin - 2.0).abs() < 1e-6, "{margin}");
            // A graph that also outputs the margin may score the margin.
            let margin = layer(&g, 2, 0, "z").unwrap();
            assert_eq!(margin.post_transform, PostTransform::None);
        }
    }

    /// A weight vector is one column.
    #[test]
    fn a_weight_vector_is_one_column() {
        let g = graph(
            vec![node("MatMul", &["x", "w"], "y")],
            vec![tensor("w", &[2], &[1.0, 2.0])],
        );
        assert_eq!(layer(&g, 2, 1, "y").unwrap().weights, vec![1.0, 2.0]);
    }

    /// Anything but a linear layer (and a Sigmoid) scored at its end is left
    /// to the model-agnostic estimator, as is a layer whose constants do not
    /// fit the features, without panicking on nonsense shapes.
    #[test]
    fn other_graphs_are_not_read_as_linear() {
        let w = || tensor("w", &[2, 1], &[1.0, 2.0]);
        let b = || tensor("b", &[1], &[0.0]);
        let not_linear = [
            // A non-linearity after the layer.
            graph(
                vec![
                    node("MatMul", &["x", "w"], "xw"),
                    node("Add", &["xw", "b"], "z"),
                    node("Relu", &["z"], "y"),
                ],
                vec![w(), b()],
            ),
            // Weights computed in the graph, not constants.
            graph(
                vec![
                    node("MatMul", &["x", "v"], "xw"),
                    node("Add", &["xw", "b"], "y"),
                ],
                vec![b()],
            ),
            // A Gemm that transposes its input.
            graph(
                vec![NodeProto {
                    attribute: vec![crate::explain::onnx::AttributeProto {
                        name: Some("transA".into()),
                        i: Some(1),
                        ..Default::default()
                    }],
                    ..node("Gemm", &["x", "w", "b"], "y")
                }],
                vec![w(), b()],
            ),
        ];
        let layer_with = |w: TensorProto, b: TensorProto| {
            graph(
                vec![
                    node("MatMul", &["x", "w"], "xw"),
                    node("Add", &["xw", "b"], "y"),
                ],
                vec![w, b],
            )
        };
        for (g, width, scored) in not_linear.into_iter().map(|g| (g, 2, "y")).chain([
            // Scored at a tensor the layer does not make.
            (layer_with(w(), b()), 2, "other"),
            // Weights for 2 features, 3 expected.
            (layer_with(w(), b()), 3, "y"),
            // Nonsense dimensions.
            (layer_with(tensor("w", &[2, -1], &[1.0, 2.0]), b()), 2, "y"),
            (
                layer_with(tensor("w", &[2, i64::MIN + 1], &[1.0, 2.0]), b()),
                2,
                "y",
            ),
            // A bias that is a column, not a row.
            (
                layer_with(
                    tensor("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
                    tensor("b", &[2, 1], &[0.0, 1.0]),
                ),
                2,
                "y",
            ),
        ]) {
            assert!(layer(&g, width, 0, scored).is_none(), "{g:?}");
        }
    }
}
