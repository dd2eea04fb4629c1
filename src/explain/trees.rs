//! Tree ensembles read straight from an ONNX graph, evaluated exactly as ONNX
//! Runtime evaluates them, so that attributions explain the model that
//! actually scores.
//!
//! Supported: `ai.onnx.ml` TreeEnsembleClassifier and TreeEnsembleRegressor
//! (opsets 1–3), with SUM or AVERAGE aggregation. Values are compared at
//! float32, as ORT does, and accumulated in float64.

use std::collections::HashMap;

use super::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataType,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeError {
    #[error("the ONNX file cannot be decoded: {0}")]
    Decode(String),
    #[error("the graph has no TreeEnsembleClassifier or TreeEnsembleRegressor")]
    NoEnsemble,
    #[error(
        "the {op} reads {reads:?}, not the graph input {input:?}; attributions would not be about the input features"
    )]
    NotOnInput {
        op: String,
        reads: String,
        input: String,
    },
    #[error("{op}: attribute {attribute}: {message}")]
    Attribute {
        op: String,
        attribute: &'static str,
        message: String,
    },
    #[error(
        "{op}: aggregate_function {0} is not additive, so it has no exact Shapley attribution",
        op = "TreeEnsembleRegressor"
    )]
    NotAdditive(String),
    #[error(
        "{op}: tree {tree} is {depth} splits deep, more than the {MAX_TREE_DEPTH} the gateway takes (ONNX Runtime and TreeSHAP walk a tree by recursion, and a far deeper one overflows their stack)"
    )]
    TooDeep { op: String, tree: i64, depth: usize },
}

/// The deepest tree the gateway serves. Boosted trees are a few to a few
/// dozen splits deep, and unpruned forests on large data about a hundred;
/// a tree a hundred thousand deep crashed ONNX Runtime's session creation.
pub const MAX_TREE_DEPTH: usize = 1000;

/// How a split compares the feature value with its threshold.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    /// True when the value is one of the set (TreeEnsemble opset 5).
    Member(MemberSet),
}

impl Mode {
    fn parse(s: &str) -> Option<Option<Self>> {
        Some(match s {
            "BRANCH_LEQ" => Some(Self::Leq),
            "BRANCH_LT" => Some(Self::Lt),
            "BRANCH_GTE" => Some(Self::Gte),
            "BRANCH_GT" => Some(Self::Gt),
            "BRANCH_EQ" => Some(Self::Eq),
            "BRANCH_NEQ" => Some(Self::Neq),
            "LEAF" => None,
            _ => return None,
        })
    }
}

/// The categories of a MEMBER split.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSet {
    values: std::sync::Arc<[f32]>,
    /// ONNX Runtime 1.31 looks up large sets (31 values or more, or any value
    /// outside 0..=30) by the input truncated to an integer, and small ones
    /// by exact equality. Attributions follow ORT, not the letter of the spec.
    truncates: bool,
}

impl MemberSet {
    pub fn new(values: Vec<f32>) -> Self {
        let truncates = values.len() >= 31 || values.iter().any(|&v| !(0.0..=30.0).contains(&v));
        Self {
            values: values.into(),
            truncates,
        }
    }

    fn contains(&self, x: f32) -> bool {
        let x = if self.truncates { x.trunc() } else { x };
        self.values.contains(&x)
    }
}

/// One node of a tree. Leaves have `split == None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub split: Option<Split>,
    /// Node sample weight, for path-dependent TreeSHAP.
    pub cover: f64,
    /// The node's id in the ONNX graph (`nodes_nodeids`).
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub feature: usize,
    pub threshold: f32,
    pub mode: Mode,
    pub missing_tracks_true: bool,
    pub yes: usize,
    pub no: usize,
}

impl Split {
    /// ORT's rule: the true branch when the comparison holds, or when the
    /// value is NaN and missing values are tracked to the true branch. NaN
    /// makes every comparison false except NEQ.
    #[inline]
    pub fn goes_true(&self, x: f32) -> bool {
        self.each_goes_true([x])[0]
    }

    /// [`Self::goes_true`] for several values, with the split's mode decided
    /// once for all of them rather than once per value.
    #[inline]
    pub fn each_goes_true<const R: usize>(&self, xs: [f32; R]) -> [bool; R] {
        #[inline(always)]
        fn each<const R: usize>(
            xs: [f32; R],
            nan_goes_true: bool,
            holds: impl Fn(f32) -> bool,
        ) -> [bool; R] {
            let mut out = [false; R];
            for (o, x) in out.iter_mut().zip(xs) {
                *o = holds(x) || (x.is_nan() && nan_goes_true);
            }
            out
        }
        let (t, nan) = (self.threshold, self.missing_tracks_true);
        match &self.mode {
            Mode::Leq => each(xs, nan, |x| x <= t),
            Mode::Lt => each(xs, nan, |x| x < t),
            Mode::Gte => each(xs, nan, |x| x >= t),
            Mode::Gt => each(xs, nan, |x| x > t),
            Mode::Eq => each(xs, nan, |x| x == t),
            Mode::Neq => each(xs, nan, |x| x != t),
            Mode::Member(set) => each(xs, nan, |x| set.contains(x)),
        }
    }

    pub fn next(&self, x: f32) -> usize {
        if self.goes_true(x) { self.yes } else { self.no }
    }
}

/// One tree: node 0 is the root; leaf values are stored per output.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The tree's id in the ONNX graph (`nodes_treeids`).
    pub id: i64,
    pub nodes: Vec<Node>,
    /// `values[node * outputs + k]`: the leaf's weight for output `k`.
    pub values: Vec<f64>,
}

impl Tree {
    pub fn leaf(&self, row: &[f32]) -> usize {
        let mut node = 0;
        while let Some(split) = &self.nodes[node].split {
            node = split.next(row[split.feature]);
        }
        node
    }

    /// Adds the weights of the leaf `row` lands in, times `scale`, to
    /// `margins` (one per output), as ORT aggregates them.
    pub fn add_to_margins(&self, row: &[f32], scale: f64, margins: &mut [f64]) {
        let outputs = margins.len();
        let leaf = self.leaf(row);
        for (k, m) in margins.iter_mut().enumerate() {
            *m += scale * self.values[leaf * outputs + k];
        }
    }

    /// The child `x` follows (hot) and the other (cold), each with its share
    /// of the parent's cover.
    pub fn hot_cold(&self, split: &Split, x: f32) -> ((usize, f64), (usize, f64)) {
        let (yes, no) = self.shares(split);
        if split.goes_true(x) {
            ((split.yes, yes), (split.no, no))
        } else {
            ((split.no, no), (split.yes, yes))
        }
    }

    /// The shares of the parent's cover that the yes and no children hold;
    /// an uncovered node splits evenly.
    pub fn shares(&self, split: &Split) -> (f64, f64) {
        let (yes, no) = (self.nodes[split.yes].cover, self.nodes[split.no].cover);
        let cover = yes + no;
        if cover > 0.0 {
            (yes / cover, no / cover)
        } else {
            (0.5, 0.5)
        }
    }

    pub fn depth(&self) -> usize {
        // Without recursion: it measures trees before their depth is known
        // to be bounded.
        let mut deepest = 0;
        let mut stack = vec![(0, 0)];
        while let Some((node, depth)) = stack.pop() {
            deepest = deepest.max(depth);
            if let Some(s) = &self.nodes[node].split {
                stack.extend([(s.yes, depth + 1), (s.no, depth + 1)]);
            }
        }
        deepest
    }
}

/// What ORT applies to the aggregated margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    /// The ai.onnx.ml string attribute's value (absent means `NONE`).
    pub fn from_onnx(name: &str) -> Option<Self> {
        Some(match name {
            "NONE" => Self::None,
            "LOGISTIC" => Self::Logistic,
            "SOFTMAX" => Self::Softmax,
            "SOFTMAX_ZERO" => Self::SoftmaxZero,
            "PROBIT" => Self::Probit,
            _ => return None,
        })
    }
}

/// A tree ensemble as ORT evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    pub trees: Vec<Tree>,
    /// Margins per row: one for binary classifiers and single-target
    /// regressors, one per class or target otherwise.
    pub outputs: usize,
    pub base: Vec<f64>,
    /// AVERAGE aggregation divides the sum of leaves by the number of trees.
    pub average: bool,
    pub post_transform: PostTransform,
    pub width: usize,
}

impl Ensemble {
    /// Reads the tree ensemble of an ONNX model whose input has `width`
    /// features.
    pub fn from_onnx(bytes: &[u8], width: usize) -> Result<Self, TreeError> {
        let graph = decode_graph(bytes)?;
        let node = operator_on_input(
            &graph,
            &[
                "TreeEnsembleClassifier",
                "TreeEnsembleRegressor",
                "TreeEnsemble",
            ],
        )?;
        read_ensemble(node, width)
    }

    /// Refuses a tree ensemble anywhere in the model whose trees are deeper
    /// than [`MAX_TREE_DEPTH`], before ONNX Runtime is given the model. An
    /// ensemble that does not read (say, over another tensor's width) is
    /// left to the checks that follow, as is a file that does not decode.
    pub fn check_depth(bytes: &[u8], width: usize) -> Result<(), TreeError> {
        let Ok(graph) = decode_graph(bytes) else {
            return Ok(());
        };
        for node in graph.node.iter().filter(|n| {
            matches!(
                n.op_type(),
                "TreeEnsembleClassifier" | "TreeEnsembleRegressor" | "TreeEnsemble"
            )
        }) {
            if let Err(e @ TreeError::TooDeep { .. }) = read_ensemble(node, width) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The margins of one row, as ORT computes them before its post-transform.
    pub fn margins(&self, row: &[f32]) -> Vec<f64> {
        let mut out = self.base.clone();
        let scale = self.scale();
        for tree in &self.trees {
            tree.add_to_margins(row, scale, &mut out);
        }
        out
    }

    /// The weight of each tree's leaves in the margin.
    pub fn scale(&self) -> f64 {
        if self.average {
            1.0 / self.trees.len().max(1) as f64
        } else {
            1.0
        }
    }

    /// The probability (or transformed score) of output `k` that ORT reports
    /// for margins `m`; for binary classifiers, that of the positive class.
    pub fn transform(&self, m: &[f64], k: usize) -> f64 {
        match self.post_transform {
            PostTransform::None => m[k],
            PostTransform::Logistic => 1.0 / (1.0 + (-m[k]).exp()),
            PostTransform::Softmax | PostTransform::SoftmaxZero => {
                let max = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = m.iter().map(|v| (v - max).exp()).sum();
                (m[k] - max).exp() / sum
            }
            PostTransform::Probit => std::f64::consts::SQRT_2 * erf_inv(2.0 * m[k] - 1.0),
        }
    }

    /// Sets node covers from a sidecar exported from the native model, keyed
    /// by (ONNX tree id, ONNX node id). Every node must have one, and every
    /// cover must be a node's: one for a node the graph lacks comes from
    /// another model.
    pub fn set_covers(&mut self, covers: &HashMap<(i64, i64), f64>) -> Result<(), String> {
        let nodes: std::collections::HashSet<(i64, i64)> = self
            .trees
            .iter()
            .flat_map(|t| t.nodes.iter().map(|n| (t.id, n.id)))
            .collect();
        if let Some((tree, node)) = covers.keys().filter(|k| !nodes.contains(k)).min() {
            return Err(format!(
                "tree {tree} node {node} has a cover but is not in the graph; the covers come from another model"
            ));
        }
        for tree in &mut self.trees {
            // A node the graph reaches from several parents was copied per
            // parent, and one cover per node id cannot tell the copies apart.
            let mut ids = std::collections::HashSet::new();
            if let Some(node) = tree.nodes.iter().find(|n| !ids.insert(n.id)) {
                return Err(format!(
                    "tree {} node {} is reached from several parents (a categorical split the converter expanded), so no one cover fits it; leave the covers file out to count covers from the background sample",
                    tree.id, node.id
                ));
            }
            for node in &mut tree.nodes {
                node.cover = *covers
                    .get(&(tree.id, node.id))
                    .ok_or_else(|| format!("no cover for tree {} node {}", tree.id, node.id))?;
            }
            // Covers count training rows: every row reaching a node goes on
            // to one child. Covers that do not add up would weigh branches
            // by numbers the model was not trained on.
            // A one-leaf tree's root divides nothing; exporters give it 0.
            if tree.nodes[0].split.is_some() && tree.nodes[0].cover <= 0.0 {
                return Err(format!(
                    "tree {} node {} is the root and has cover {}; it must count the training rows",
                    tree.id, tree.nodes[0].id, tree.nodes[0].cover
                ));
            }
            for node in &tree.nodes {
                if let Some(s) = &node.split {
                    let (yes, no) = (tree.nodes[s.yes].cover, tree.nodes[s.no].cover);
                    if (node.cover - (yes + no)).abs() > COVER_SUM_TOLERANCE * node.cover.max(1.0) {
                        return Err(format!(
                            "tree {} node {} has cover {} but its children {} and {} ({yes} + {no}); covers must add up",
                            tree.id, node.id, node.cover, tree.nodes[s.yes].id, tree.nodes[s.no].id
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets every node's cover to the number of `rows` (row-major) that reach
    /// it: shap's own fallback when a model carries no covers.
    ///
    /// Where the graph shares a node among parents (a categorical split
    /// expanded into a chain of `BRANCH_EQ` nodes, see [`reroot`]), each
    /// copy of the shared part is weighted as the native model's one node
    /// is: a split's shares are those of all rows reaching the graph's node
    /// (from any parent), and a copy's cover is its parent's times its
    /// share. Path-dependent TreeSHAP is multilinear in each feature's
    /// fractions along a path, so the chain's copies then add up to the
    /// native split's attributions exactly; counted per copy instead, each
    /// copy saw only its own category's rows.
    pub fn cover_from_rows(&mut self, rows: &[f32]) {
        for tree in &mut self.trees {
            for node in &mut tree.nodes {
                node.cover = 0.0;
            }
            for row in rows.chunks(self.width) {
                let mut node = 0;
                loop {
                    tree.nodes[node].cover += 1.0;
                    match &tree.nodes[node].split {
                        Some(s) => node = s.next(row[s.feature]),
                        None => break,
                    }
                }
            }
            let mut ids = std::collections::HashSet::new();
            if tree
                .nodes
                .iter()
                .filter(|n| n.split.is_some())
                .all(|n| ids.insert(n.id))
            {
                continue;
            }
            // Rows reaching each graph node, and each of its branches.
            let mut reached: HashMap<i64, [f64; 3]> = HashMap::new();
            for node in &tree.nodes {
                if let Some(s) = &node.split {
                    let r = reached.entry(node.id).or_default();
                    r[0] += node.cover;
                    r[1] += tree.nodes[s.yes].cover;
                    r[2] += tree.nodes[s.no].cover;
                }
            }
            // Nodes are in depth-first order: parents before children.
            for at in 0..tree.nodes.len() {
                let Some(s) = tree.nodes[at].split.clone() else {
                    continue;
                };
                let [all, yes, no] = reached[&tree.nodes[at].id];
                let (yes, no) = if all > 0.0 {
                    (yes / all, no / all)
                } else {
                    (0.5, 0.5)
                };
                let cover = tree.nodes[at].cover;
                tree.nodes[s.yes].cover = cover * yes;
                tree.nodes[s.no].cover = cover * no;
            }
        }
    }
}

/// Inverse error function (Giles' approximation), for PROBIT post-transform.
fn erf_inv(x: f64) -> f64 {
    let w = -((1.0 - x) * (1.0 + x)).ln();
    let p = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p
    };
    p * x
}

/// Reads the flat per-node attribute arrays of TreeEnsembleClassifier/Regressor.
struct Reader<'a> {
    op: &'a str,
    attributes: HashMap<&'a str, &'a AttributeProto>,
}

impl<'a> Reader<'a> {
    fn new(node: &'a NodeProto) -> Self {
        Self {
            op: node.op_type(),
            attributes: node.attribute.iter().map(|a| (a.name(), a)).collect(),
        }
    }

    fn err(&self, attribute: &'static str, message: impl Into<String>) -> TreeError {
        TreeError::Attribute {
            op: self.op.to_owned(),
            attribute,
            message: message.into(),
        }
    }

    fn ints(&self, name: &'static str) -> &'a [i64] {
        self.attributes.get(name).map_or(&[], |a| a.ints.as_slice())
    }

    fn strings(&self, name: &'static str) -> Vec<String> {
        self.attributes
            .get(name)
            .map(|a| {
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn string(&self, name: &'static str) -> Option<String> {
        self.attributes
            .get(name)
            .map(|a| String::from_utf8_lossy(a.s()).into_owned())
    }

    /// A float list given either as `name` or as `name_as_tensor`.
    fn floats(&self, name: &'static str, tensor_name: &'static str) -> Result<Vec<f64>, TreeError> {
        if let Some(t) = self.attributes.get(tensor_name).and_then(|a| a.t.as_ref()) {
            return tensor_values(t)
                .ok_or_else(|| self.err(tensor_name, "must be a float or double tensor"));
        }
        Ok(self
            .attributes
            .get(name)
            .map(|a| a.floats.iter().map(|&f| f64::from(f)).collect())
            .unwrap_or_default())
    }

    fn read(&self, width: usize) -> Result<Ensemble, TreeError> {
        let classifier = self.op == "TreeEnsembleClassifier";
        let tree_ids = self.ints("nodes_treeids");
        let node_ids = self.ints("nodes_nodeids");
        let features = self.ints("nodes_featureids");
        let modes = self.strings("nodes_modes");
        let thresholds = self.floats("nodes_values", "nodes_values_as_tensor")?;
        let yes = self.ints("nodes_truenodeids");
        let no = self.ints("nodes_falsenodeids");
        let missing = self.ints("nodes_missing_value_tracks_true");
        let n = tree_ids.len();
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", thresholds.len()),
            ("nodes_truenodeids", yes.len()),
            ("nodes_falsenodeids", no.len()),
        ] {
            if len != n {
                return Err(self.err(
                    "nodes_treeids",
                    format!("has {n} entries but {name} has {len}"),
                ));
            }
        }
        if !missing.is_empty() && missing.len() != n {
            return Err(self.err(
                "nodes_missing_value_tracks_true",
                format!("has {} entries, expected {n}", missing.len()),
            ));
        }

        // Trees in the order of their ids; nodes indexed by (tree, node id).
        let mut tree_order: Vec<i64> = tree_ids.to_vec();
        tree_order.sort_unstable();
        tree_order.dedup();
        let tree_index: HashMap<i64, usize> = tree_order
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i))
            .collect();
        let mut slots: Vec<HashMap<i64, usize>> = vec![HashMap::new(); tree_order.len()];
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); tree_order.len()];
        for i in 0..n {
            let t = tree_index[&tree_ids[i]];
            let slot = slots[t].len();
            slots[t].insert(node_ids[i], slot);
            members[t].push(i);
        }

        let (leaf_tree, leaf_node, leaf_target, leaf_weight, outputs, post, base) = if classifier {
            let weights = self.floats("class_weights", "class_weights_as_tensor")?;
            let classes = self
                .ints("classlabels_int64s")
                .len()
                .max(self.strings("classlabels_strings").len());
            let class_ids = self.ints("class_ids");
            let binary = classes == 2
                && class_ids
                    .iter()
                    .all(|&c| c == class_ids.first().copied().unwrap_or(0));
            let outputs = if binary { 1 } else { classes };
            let targets: Vec<i64> = if binary {
                vec![0; class_ids.len()]
            } else {
                class_ids.to_vec()
            };
            (
                self.ints("class_treeids"),
                self.ints("class_nodeids"),
                targets,
                weights,
                outputs,
                self.string("post_transform"),
                self.floats("base_values", "base_values_as_tensor")?,
            )
        } else {
            let weights = self.floats("target_weights", "target_weights_as_tensor")?;
            let outputs = self
                .attributes
                .get("n_targets")
                .map_or(1, |a| a.i() as usize);
            match self.string("aggregate_function").as_deref() {
                None | Some("SUM") | Some("AVERAGE") => {}
                Some(other) => return Err(TreeError::NotAdditive(other.to_owned())),
            }
            (
                self.ints("target_treeids"),
                self.ints("target_nodeids"),
                self.ints("target_ids").to_vec(),
                weights,
                outputs,
                self.string("post_transform"),
                self.floats("base_values", "base_values_as_tensor")?,
            )
        };
        if leaf_weight.len() != leaf_tree.len()
            || leaf_node.len() != leaf_tree.len()
            || leaf_target.len() != leaf_tree.len()
        {
            return Err(self.err("class_weights", "leaf arrays differ in length"));
        }
        let outputs = outputs.max(1);

        let mut trees = Vec::with_capacity(tree_order.len());
        for (t, member) in members.iter().enumerate() {
            let mut nodes = Vec::with_capacity(member.len());
            for &i in member {
                let mode = Mode::parse(&modes[i]).ok_or_else(|| {
                    self.err("nodes_modes", format!("{:?} is not a known mode", modes[i]))
                })?;
                let split = match mode {
                    None => None,
                    Some(mode) => {
                        let child = |id: i64, attr| {
                            slots[t].get(&id).copied().ok_or_else(|| {
                                self.err(attr, format!("tree {} has no node {id}", tree_order[t]))
                            })
                        };
                        let feature = features[i] as usize;
                        if feature >= width {
                            return Err(self.err(
                                "nodes_featureids",
                                format!("feature {feature} is beyond the input's {width} columns"),
                            ));
                        }
                        Some(Split {
                            feature,
                            threshold: thresholds[i] as f32,
                            mode,
                            missing_tracks_true: missing.get(i).is_some_and(|&m| m != 0),
                            yes: child(yes[i], "nodes_truenodeids")?,
                            no: child(no[i], "nodes_falsenodeids")?,
                        })
                    }
                };
                nodes.push(Node {
                    split,
                    cover: 1.0,
                    id: node_ids[i],
                });
            }
            // The root is the node no other node points to.
            let mut pointed = vec![false; nodes.len()];
            for s in nodes.iter().filter_map(|n| n.split.as_ref()) {
                pointed[s.yes] = true;
                pointed[s.no] = true;
            }
            let root = pointed
                .iter()
                .position(|p| !p)
                .ok_or_else(|| self.err("nodes_nodeids", "a tree has no root"))?;
            let mut values = vec![0.0; nodes.len() * outputs];
            for j in 0..leaf_tree.len() {
                if tree_index.get(&leaf_tree[j]) == Some(&t) {
                    let node = *slots[t]
                        .get(&leaf_node[j])
                        .ok_or_else(|| self.err("class_nodeids", "names a missing node"))?;
                    let k = leaf_target[j] as usize;
                    if k >= outputs {
                        return Err(self.err(
                            "class_ids",
                            format!("target {k} is beyond {outputs} outputs"),
                        ));
                    }
                    values[node * outputs + k] += leaf_weight[j];
                }
            }
            let graph = Tree {
                id: tree_order[t],
                nodes,
                values,
            };
            trees.push(reroot(&graph, root, outputs).ok_or_else(|| {
                self.err(
                    "nodes_truenodeids",
                    format!(
                        "tree {} expands to more than {MAX_TREE_NODES} nodes (a cycle, or nodes shared by too many parents)",
                        graph.id
                    ),
                )
            })?);
        }

        let post = post.as_deref().unwrap_or("NONE");
        let post_transform = PostTransform::from_onnx(post)
            .ok_or_else(|| self.err("post_transform", format!("{post:?} is not known")))?;
        let mut base_values = vec![0.0; outputs];
        if classifier && outputs == 1 && base.len() == 2 {
            base_values[0] = base[1];
        } else {
            for (b, v) in base_values.iter_mut().zip(base) {
                *b = v;
            }
        }
        Ok(Ensemble {
            trees,
            outputs,
            base: base_values,
            average: !classifier && self.string("aggregate_function").as_deref() == Some("AVERAGE"),
            post_transform,
            width,
        })
    }

    fn tensor(&self, name: &'static str) -> Result<Vec<f64>, TreeError> {
        let t = self
            .attributes
            .get(name)
            .and_then(|a| a.t.as_ref())
            .ok_or_else(|| self.err(name, "is missing"))?;
        tensor_values(t).ok_or_else(|| self.err(name, "must be a float or double tensor"))
    }

    fn int(&self, name: &'static str, default: i64) -> i64 {
        self.attributes.get(name).map_or(default, |a| a.i())
    }

    /// Reads `TreeEnsemble` (ai.onnx.ml opset 5): split nodes and leaves in
    /// separate arrays, integer-coded modes and transforms, and set-membership
    /// splits. Node ids for covers are the split's index in `nodes_*`, and
    /// −(leaf index + 1) for leaves.
    fn read_v5(&self, width: usize) -> Result<Ensemble, TreeError> {
        let roots = self.ints("tree_roots");
        let features = self.ints("nodes_featureids");
        let modes = self
            .attributes
            .get("nodes_modes")
            .and_then(|a| a.t.as_ref())
            .map(|t| {
                if t.raw_data().is_empty() {
                    t.int32_data.iter().map(|&m| m as u8).collect()
                } else {
                    t.raw_data().to_vec()
                }
            })
            .ok_or_else(|| self.err("nodes_modes", "is missing"))?;
        let n = features.len();
        let splits = if modes.iter().all(|&m| m == 6) {
            vec![0.0; n]
        } else {
            self.tensor("nodes_splits")?
        };
        let (yes, yes_leaf) = (self.ints("nodes_truenodeids"), self.ints("nodes_trueleafs"));
        let (no, no_leaf) = (
            self.ints("nodes_falsenodeids"),
            self.ints("nodes_falseleafs"),
        );
        let missing = self.ints("nodes_missing_value_tracks_true");
        for (name, len) in [
            ("nodes_modes", modes.len()),
            ("nodes_splits", splits.len()),
            ("nodes_truenodeids", yes.len()),
            ("nodes_trueleafs", yes_leaf.len()),
            ("nodes_falsenodeids", no.len()),
            ("nodes_falseleafs", no_leaf.len()),
        ] {
            if len != n {
                return Err(self.err(
                    "nodes_featureids",
                    format!("has {n} entries but {name} has {len}"),
                ));
            }
        }
        let targets = self.ints("leaf_targetids");
        let weights = self.tensor("leaf_weights")?;
        if targets.len() != weights.len() {
            return Err(self.err("leaf_weights", "differs in length from leaf_targetids"));
        }
        let outputs = self.int("n_targets", 1).max(1) as usize;
        let average = match self.int("aggregate_function", 1) {
            0 => true,
            1 => false,
            other => {
                return Err(TreeError::NotAdditive(if other == 2 {
                    "MIN".into()
                } else {
                    "MAX".into()
                }));
            }
        };
        let post_transform = match self.int("post_transform", 0) {
            0 => PostTransform::None,
            1 => PostTransform::Softmax,
            2 => PostTransform::Logistic,
            3 => PostTransform::SoftmaxZero,
            4 => PostTransform::Probit,
            other => return Err(self.err("post_transform", format!("{other} is not known"))),
        };
        // Membership sets, NaN-delimited, in the order MEMBER nodes appear.
        let mut sets = Vec::new();
        if modes.contains(&6) {
            let values = self.tensor("membership_values")?;
            for group in values.split(|v| v.is_nan()) {
                sets.push(MemberSet::new(group.iter().map(|&v| v as f32).collect()));
            }
        }
        let mut member_of = vec![None; n];
        let mut next_set = 0;
        for (i, &m) in modes.iter().enumerate() {
            if m == 6 {
                let set = sets.get(next_set).cloned().ok_or_else(|| {
                    self.err("membership_values", "has fewer sets than MEMBER nodes")
                })?;
                member_of[i] = Some(set);
                next_set += 1;
            }
        }

        let mut trees = Vec::with_capacity(roots.len());
        for (t, &root) in roots.iter().enumerate() {
            let mut nodes: Vec<Node> = Vec::new();
            let mut values = Vec::new();
            // (child is a leaf, index) → position in this tree; depth-first.
            let mut stack: Vec<Pending> = vec![(false, root, None)];
            while let Some((leaf, index, parent)) = stack.pop() {
                let at = nodes.len();
                if let Some((p, is_yes)) = parent {
                    let split = nodes[p].split.as_mut().expect("parents are splits");
                    if is_yes {
                        split.yes = at
                    } else {
                        split.no = at
                    }
                }
                if leaf {
                    let j = usize::try_from(index)
                        .ok()
                        .filter(|&j| j < weights.len())
                        .ok_or_else(|| {
                            self.err("nodes_trueleafs", format!("leaf {index} does not exist"))
                        })?;
                    let k = targets[j] as usize;
                    if k >= outputs {
                        return Err(self.err(
                            "leaf_targetids",
                            format!("target {k} is beyond {outputs} outputs"),
                        ));
                    }
                    nodes.push(Node {
                        split: None,
                        cover: 1.0,
                        id: -(j as i64) - 1,
                    });
                    let mut v = vec![0.0; outputs];
                    v[k] = weights[j];
                    values.extend(v);
                    continue;
                }
                let i = usize::try_from(index)
                    .ok()
                    .filter(|&i| i < n)
                    .ok_or_else(|| {
                        self.err("tree_roots", format!("node {index} does not exist"))
                    })?;
                let feature = features[i] as usize;
                if feature >= width {
                    return Err(self.err(
                        "nodes_featureids",
                        format!("feature {feature} is beyond the input's {width} columns"),
                    ));
                }
                let mode = match modes[i] {
                    0 => Mode::Leq,
                    1 => Mode::Lt,
                    2 => Mode::Gte,
                    3 => Mode::Gt,
                    4 => Mode::Eq,
                    5 => Mode::Neq,
                    6 => Mode::Member(member_of[i].clone().expect("assigned above")),
                    other => {
                        return Err(self.err("nodes_modes", format!("{other} is not a known mode")));
                    }
                };
                nodes.push(Node {
                    split: Some(Split {
                        feature,
                        threshold: splits[i] as f32,
                        mode,
                        missing_tracks_true: missing.get(i).is_some_and(|&m| m != 0),
                        yes: usize::MAX,
                        no: usize::MAX,
                    }),
                    cover: 1.0,
                    id: i as i64,
                });
                values.extend(std::iter::repeat_n(0.0, outputs));
                if nodes.len() > n + weights.len() {
                    return Err(self.err("tree_roots", "the trees are not acyclic"));
                }
                stack.push((no_leaf[i] != 0, no[i], Some((at, false))));
                stack.push((yes_leaf[i] != 0, yes[i], Some((at, true))));
            }
            trees.push(Tree {
                id: t as i64,
                nodes,
                values,
            });
        }
        Ok(Ensemble {
            trees,
            outputs,
            base: vec![0.0; outputs],
            average,
            post_transform,
            width,
        })
    }
}

/// Reads one tree-ensemble operator, refusing trees deeper than
/// [`MAX_TREE_DEPTH`].
fn read_ensemble(node: &NodeProto, width: usize) -> Result<Ensemble, TreeError> {
    let reader = Reader::new(node);
    let ensemble = if node.op_type() == "TreeEnsemble" {
        reader.read_v5(width)
    } else {
        reader.read(width)
    }?;
    if let Some((tree, depth)) = ensemble
        .trees
        .iter()
        .map(|t| (t.id, t.depth()))
        .find(|&(_, depth)| depth > MAX_TREE_DEPTH)
    {
        return Err(TreeError::TooDeep {
            op: node.op_type().to_owned(),
            tree,
            depth,
        });
    }
    Ok(ensemble)
}

/// A node still to place while reading an opset-5 tree: whether it is a leaf,
/// its index in the leaf or node arrays, and (parent, is true branch).
type Pending = (bool, i64, Option<(usize, bool)>);

/// The graph of an ONNX model file.
pub(super) fn decode_graph(bytes: &[u8]) -> Result<GraphProto, TreeError> {
    let model: ModelProto =
        prost::Message::decode(bytes).map_err(|e| TreeError::Decode(e.to_string()))?;
    Ok(model.graph.unwrap_or_default())
}

/// Finds the first of `ops` in `graph` and checks that it reads the graph
/// input directly: otherwise attributions would be about some intermediate
/// tensor, not the input features.
pub(super) fn operator_on_input<'g>(
    graph: &'g GraphProto,
    ops: &[&str],
) -> Result<&'g NodeProto, TreeError> {
    let node = graph
        .node
        .iter()
        .find(|n| ops.contains(&n.op_type()))
        .ok_or(TreeError::NoEnsemble)?;
    let input = graph.input.first().map(|i| i.name()).unwrap_or_default();
    if node.input.first().map(String::as_str) != Some(input) {
        return Err(TreeError::NotOnInput {
            op: node.op_type().to_owned(),
            reads: node.input.first().cloned().unwrap_or_default(),
            input: input.to_owned(),
        });
    }
    Ok(node)
}

/// How far, relative to it, a node's cover may differ from the sum of its
/// children's: exporters write float32 sums of hessians (XGBoost).
const COVER_SUM_TOLERANCE: f64 = 1e-4;

/// The most nodes one tree may expand to (see [`reroot`]).
const MAX_TREE_NODES: usize = 1 << 20;

/// Renumbers a tree so that its root is node 0 and nodes are in depth-first
/// order, which keeps each traversal's memory accesses close together, and
/// makes it a tree: every visit of a node becomes a node of its own.
/// Converters expand a categorical split into a chain of `BRANCH_EQ` nodes
/// whose true branches share one child; shared, that child's cover would
/// count the rows of all its parents, and path-dependent TreeSHAP weighs
/// each branch by its child's cover. `None` when the expansion passes
/// [`MAX_TREE_NODES`] (a cycle, or too much sharing).
fn reroot(tree: &Tree, root: usize, outputs: usize) -> Option<Tree> {
    let mut nodes: Vec<Node> = Vec::with_capacity(tree.nodes.len());
    let mut values = Vec::with_capacity(tree.values.len());
    // (node, and the new parent's index and branch that leads to it)
    let mut stack: Vec<(usize, Option<(usize, bool)>)> = vec![(root, None)];
    while let Some((old, parent)) = stack.pop() {
        if nodes.len() == MAX_TREE_NODES {
            return None;
        }
        let at = nodes.len();
        if let Some((p, yes)) = parent
            && let Some(s) = &mut nodes[p].split
        {
            if yes {
                s.yes = at;
            } else {
                s.no = at;
            }
        }
        let node = tree.nodes[old].clone();
        if let Some(s) = &node.split {
            stack.push((s.no, Some((at, false))));
            stack.push((s.yes, Some((at, true))));
        }
        nodes.push(node);
        values.extend_from_slice(&tree.values[old * outputs..(old + 1) * outputs]);
    }
    Some(Tree {
        id: tree.id,
        nodes,
        values,
    })
}

/// A float or double tensor's values, in f64.
pub(super) fn tensor_values(t: &TensorProto) -> Option<Vec<f64>> {
    match DataType::try_from(t.data_type()).ok()? {
        DataType::Float if !t.float_data.is_empty() => {
            Some(t.float_data.iter().map(|&f| f64::from(f)).collect())
        }
        DataType::Float => Some(
            t.raw_data()
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        ),
        DataType::Double if !t.double_data.is_empty() => Some(t.double_data.clone()),
        DataType::Double => Some(
            t.raw_data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A model whose one regression tree is a chain of `depth` splits on
    /// feature 0, each with a leaf on its true side.
    pub(crate) fn chain(depth: usize) -> Vec<u8> {
        use super::super::onnx::{AttributeProto, GraphProto, ModelProto, ValueInfoProto};
        let n = 2 * depth + 1;
        let ints = |name: &str, v: Vec<i64>| AttributeProto {
            name: Some(name.into()),
            ints: v,
            ..Default::default()
        };
        let leaves: Vec<i64> = (depth as i64..n as i64).collect();
        let mode = |i: usize| if i < depth { "BRANCH_LEQ" } else { "LEAF" };
        let attribute = vec![
            ints("nodes_treeids", vec![0; n]),
            ints("nodes_nodeids", (0..n as i64).collect()),
            ints("nodes_featureids", vec![0; n]),
            AttributeProto {
                name: Some("nodes_modes".into()),
                strings: (0..n).map(|i| mode(i).as_bytes().to_vec()).collect(),
                ..Default::default()
            },
            AttributeProto {
                name: Some("nodes_values".into()),
                floats: (0..n).map(|i| i as f32).collect(),
                ..Default::default()
            },
            // Split i: true to leaf depth + 1 + i, false to split i + 1 (the
            // last false side is the leaf `depth`).
            ints(
                "nodes_truenodeids",
                (0..n)
                    .map(|i| if i < depth { (depth + 1 + i) as i64 } else { 0 })
                    .collect(),
            ),
            ints(
                "nodes_falsenodeids",
                (0..n)
                    .map(|i| if i < depth { i as i64 + 1 } else { 0 })
                    .collect(),
            ),
            ints("target_treeids", vec![0; leaves.len()]),
            ints("target_nodeids", leaves.clone()),
            ints("target_ids", vec![0; leaves.len()]),
            AttributeProto {
                name: Some("target_weights".into()),
                floats: vec![1.0; leaves.len()],
                ..Default::default()
            },
        ];
        prost::Message::encode_to_vec(&ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: Some("TreeEnsembleRegressor".into()),
                    input: vec!["input".into()],
                    output: vec!["variable".into()],
                    attribute,
                    ..Default::default()
                }],
                input: vec![ValueInfoProto {
                    name: Some("input".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// A tree deeper than the gateway takes is refused before ONNX Runtime
    /// sees it (one a hundred thousand deep crashed its session creation),
    /// and measuring it takes no recursion.
    #[test]
    fn a_tree_deeper_than_the_limit_is_refused() {
        Ensemble::check_depth(&chain(MAX_TREE_DEPTH), 1).unwrap();
        let e = Ensemble::check_depth(&chain(100_000), 1).unwrap_err();
        assert!(
            matches!(
                e,
                TreeError::TooDeep {
                    tree: 0,
                    depth: 100_000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(Ensemble::from_onnx(&chain(MAX_TREE_DEPTH + 1), 1).is_err());
    }

    /// A node several parents share (an expanded categorical split) is
    /// copied per parent, so covers counted from rows add up along every
    /// path, and the path-dependent expected value is the rows' mean margin
    /// (with the node shared it counted each row that reached it twice).
    #[test]
    fn a_shared_node_is_copied_per_parent() {
        let leaf = |id| Node {
            split: None,
            cover: 0.0,
            id,
        };
        let equals = |value, yes, no, id| Node {
            split: Some(Split {
                feature: 0,
                threshold: value,
                mode: Mode::Eq,
                missing_tracks_true: false,
                yes,
                no,
            }),
            cover: 0.0,
            id,
        };
        // x == 1 or x == 2 leads to the same leaf (1.0); else 0.0.
        let graph = Tree {
            id: 0,
            nodes: vec![equals(1.0, 3, 1, 0), equals(2.0, 3, 2, 1), leaf(2), leaf(3)],
            values: vec![0.0, 0.0, 0.0, 1.0],
        };
        let tree = reroot(&graph, 0, 1).unwrap();
        assert_eq!(tree.nodes.len(), 5);
        let mut parents = vec![0; tree.nodes.len()];
        for split in tree.nodes.iter().filter_map(|n| n.split.as_ref()) {
            parents[split.yes] += 1;
            parents[split.no] += 1;
        }
        assert!(parents[1..].iter().all(|&p| p == 1), "{parents:?}");
        let mut ensemble = Ensemble {
            trees: vec![tree],
            outputs: 1,
            base: vec![0.0],
            average: false,
            post_transform: PostTransform::None,
            width: 1,
        };
        let rows = [1.0f32, 2.0, 3.0, 3.0];
        for x in rows {
            assert_eq!(ensemble.margins(&[x])[0], graph_margin(&graph, x));
        }
        ensemble.cover_from_rows(&rows);
        let mean = rows.iter().map(|&x| ensemble.margins(&[x])[0]).sum::<f64>() / 4.0;
        let expected = super::super::treeshap::PathDependent::new(ensemble).expected()[0];
        assert!((expected - mean).abs() < 1e-12, "{expected} vs {mean}");
        // One cover per node id cannot describe the copies.
        let mut with_sidecar = Ensemble {
            trees: vec![reroot(&graph, 0, 1).unwrap()],
            outputs: 1,
            base: vec![0.0],
            average: false,
            post_transform: PostTransform::None,
            width: 1,
        };
        let covers = (0..4).map(|n| ((0, n), 1.0)).collect();
        let refused = with_sidecar.set_covers(&covers).unwrap_err();
        assert!(
            refused.contains("node 3 is reached from several parents"),
            "{refused}"
        );
    }

    /// A categorical split as the native model holds it (one MEMBER node)
    /// and as converters write it (a chain of EQ nodes sharing the in-set
    /// subtree) explain every row alike when covers come from rows: the
    /// shared subtree's copies are weighted by all rows in the set, as the
    /// native node's one subtree is.
    #[test]
    fn an_expanded_categorical_split_explains_as_the_native_split() {
        let node = |split: Option<Split>, id| Node {
            split,
            cover: 0.0,
            id,
        };
        let split = |feature, threshold, mode, yes, no| {
            Some(Split {
                feature,
                threshold,
                mode,
                missing_tracks_true: false,
                yes,
                no,
            })
        };
        // x0 in {1, 2, 3} leads to a split on x1 (leaves 5.0 / -1.0), else
        // a split on x2 (leaves 2.0 / 0.5).
        let native = Tree {
            id: 0,
            nodes: vec![
                node(
                    split(
                        0,
                        0.0,
                        Mode::Member(MemberSet::new(vec![1.0, 2.0, 3.0])),
                        1,
                        4,
                    ),
                    0,
                ),
                node(split(1, 0.5, Mode::Leq, 2, 3), 1),
                node(None, 2),
                node(None, 3),
                node(split(2, 0.5, Mode::Leq, 5, 6), 4),
                node(None, 5),
                node(None, 6),
            ],
            values: vec![0.0, 0.0, 5.0, -1.0, 0.0, 2.0, 0.5],
        };
        let chain = Tree {
            id: 0,
            nodes: vec![
                node(split(0, 1.0, Mode::Eq, 3, 1), 0),
                node(split(0, 2.0, Mode::Eq, 3, 2), 1),
                node(split(0, 3.0, Mode::Eq, 3, 6), 2),
                node(split(1, 0.5, Mode::Leq, 4, 5), 3),
                node(None, 4),
                node(None, 5),
                node(split(2, 0.5, Mode::Leq, 7, 8), 6),
                node(None, 7),
                node(None, 8),
            ],
            values: vec![0.0, 0.0, 0.0, 0.0, 5.0, -1.0, 0.0, 2.0, 0.5],
        };
        // Categories 0..=4, unevenly, with x1 and x2 varying within them and
        // x1's share differing by category (the per-category covers differ).
        let rows: Vec<f32> = (0..60)
            .flat_map(|i| {
                let category = [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 0.0, 4.0, 4.0, 0.0][i % 10];
                let x1 = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0][i % 10];
                [category, x1, (i % 4 == 1) as u8 as f32]
            })
            .collect();
        let explainer = |tree: &Tree| {
            let mut ensemble = Ensemble {
                trees: vec![reroot(tree, 0, 1).unwrap()],
                outputs: 1,
                base: vec![0.0],
                average: false,
                post_transform: PostTransform::None,
                width: 3,
            };
            ensemble.cover_from_rows(&rows);
            super::super::treeshap::PathDependent::new(ensemble)
        };
        let (native, chain) = (explainer(&native), explainer(&chain));
        for row in rows.chunks(3).take(10) {
            let (n, c) = (native.explain(row), chain.explain(row));
            assert!((n.expected[0] - c.expected[0]).abs() < 1e-12);
            for (a, b) in n.phi.iter().zip(&c.phi) {
                assert!((a - b).abs() < 1e-12, "{row:?}: {:?} vs {:?}", n.phi, c.phi);
            }
        }
    }

    /// A one-leaf tree (LightGBM writes them where a class's tree cannot
    /// split) has a root of cover 0 in the exporters' sidecars; it divides
    /// nothing and is accepted. Covers that do not add up are not.
    #[test]
    fn covers_must_add_up_but_a_lone_leaf_may_cover_nothing() {
        let leaf = |id| Node {
            split: None,
            cover: 0.0,
            id,
        };
        let split = Node {
            split: Some(Split {
                feature: 0,
                threshold: 0.5,
                mode: Mode::Leq,
                missing_tracks_true: false,
                yes: 1,
                no: 2,
            }),
            cover: 0.0,
            id: 0,
        };
        let mut ensemble = Ensemble {
            trees: vec![
                Tree {
                    id: 0,
                    nodes: vec![leaf(0)],
                    values: vec![0.3],
                },
                Tree {
                    id: 1,
                    nodes: vec![split, leaf(1), leaf(2)],
                    values: vec![0.0, 1.0, -1.0],
                },
            ],
            outputs: 1,
            base: vec![0.0],
            average: false,
            post_transform: PostTransform::None,
            width: 1,
        };
        let mut covers: HashMap<(i64, i64), f64> =
            [((0, 0), 0.0), ((1, 0), 10.0), ((1, 1), 4.0), ((1, 2), 6.0)].into();
        ensemble.set_covers(&covers).unwrap();
        covers.insert((1, 0), 12.0);
        let refused = ensemble.set_covers(&covers).unwrap_err();
        assert!(refused.contains("tree 1 node 0 has cover 12"), "{refused}");
    }

    fn graph_margin(graph: &Tree, x: f32) -> f64 {
        graph.values[graph.leaf(&[x])]
    }

    /// ORT 1.31 matches small sets of codes 0..=30 exactly and looks larger
    /// ones up by the truncated input (measured by models/opset5_fixtures.py).
    #[test]
    fn member_sets_follow_onnx_runtime() {
        let small = MemberSet::new(vec![2.0, 3.0]);
        assert!(small.contains(2.0) && !small.contains(2.5) && !small.contains(f32::NAN));
        let large = MemberSet::new(vec![4.0, 9.0, 40.0]);
        assert!(
            large.contains(40.5)
                && large.contains(9.99)
                && !large.contains(5.0)
                && !large.contains(f32::NAN)
        );
    }
}
