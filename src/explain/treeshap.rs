//! Exact path-dependent TreeSHAP (Lundberg et al. 2020, Algorithm 2) over
//! ensembles read from ONNX, accumulated in float64.
//!
//! Path-dependent TreeSHAP explains a prediction against the tree's own
//! training distribution, as recorded by node covers: features outside a
//! coalition follow both branches, weighted by how many samples went each way.

use super::{
    quadrature,
    trees::{Ensemble, Tree},
};

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: Option<usize>,
    zero_fraction: f64,
    one_fraction: f64,
    weight: f64,
}

/// Per-row TreeSHAP values: `phi[feature * outputs + k]`, plus the expected
/// margin per output and the row's own margins (exactly
/// [`Ensemble::margins`], summed during the walk, which meets the row's
/// leaves anyway).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeShap {
    pub phi: Vec<f64>,
    pub expected: Vec<f64>,
    pub margin: Vec<f64>,
}

/// A path-dependent TreeSHAP explainer with its per-model precomputation.
#[derive(Debug)]
pub struct PathDependent {
    ensemble: Ensemble,
    expected: Vec<f64>,
    buffer_len: usize,
    /// Per tree: its quadrature tables when the rule is exact for it (≤ 16
    /// unique features on every path); deeper trees use the classic
    /// recursion.
    quadrature: Vec<Option<quadrature::Prepared>>,
}

impl PathDependent {
    pub fn new(ensemble: Ensemble) -> Self {
        let scale = ensemble.scale();
        let mut expected = ensemble.base.clone();
        for tree in &ensemble.trees {
            for (k, e) in expected.iter_mut().enumerate() {
                *e += scale * tree_expectation(tree, ensemble.outputs, k);
            }
        }
        let depth = ensemble.trees.iter().map(Tree::depth).max().unwrap_or(0);
        let quadrature = ensemble
            .trees
            .iter()
            .map(quadrature::Prepared::new)
            .collect();
        Self {
            ensemble,
            expected,
            buffer_len: (depth + 2) * (depth + 3) / 2 + 1,
            quadrature,
        }
    }

    pub fn ensemble(&self) -> &Ensemble {
        &self.ensemble
    }

    /// The expected margin per output under the covers.
    pub fn expected(&self) -> &[f64] {
        &self.expected
    }

    /// [`Self::explain`] for many rows. Blocks of rows walk each tree
    /// together, which shares the per-node work among them: the largest
    /// blocks first, then smaller ones, and a last odd row alone.
    pub fn explain_rows(&self, rows: &[&[f32]]) -> Vec<TreeShap> {
        let mut explained = Vec::with_capacity(rows.len());
        let mut rest = rows;
        while !rest.is_empty() {
            rest = match rest.len() {
                16.. => self.block::<16>(rest, &mut explained),
                8.. => self.block::<8>(rest, &mut explained),
                4.. => self.block::<4>(rest, &mut explained),
                2.. => self.block::<2>(rest, &mut explained),
                _ => {
                    explained.push(self.explain(rest[0]));
                    &rest[1..]
                }
            };
        }
        explained
    }

    /// Explains the first R of `rows` as one block; returns the others.
    fn block<'r, const R: usize>(
        &self,
        rows: &'r [&'r [f32]],
        explained: &mut Vec<TreeShap>,
    ) -> &'r [&'r [f32]] {
        let (block, rest) = rows.split_first_chunk::<R>().expect("R rows or more");
        let outputs = self.ensemble.outputs;
        let stride = self.ensemble.width * outputs;
        let mut phi = vec![0.0; R * stride];
        let mut margins = self.ensemble.base.repeat(R);
        self.accumulate(|tree, prepared, scale| match prepared {
            Some(prepared) => quadrature::accumulate_block(
                tree,
                prepared,
                block,
                outputs,
                scale,
                &mut phi,
                &mut margins,
            ),
            None => {
                for ((row, phi), margin) in block
                    .iter()
                    .zip(phi.chunks_mut(stride))
                    .zip(margins.chunks_mut(outputs))
                {
                    self.classic(tree, row, scale, phi, margin);
                }
            }
        });
        explained.extend(
            phi.chunks(stride)
                .zip(margins.chunks(outputs))
                .map(|(phi, margin)| TreeShap {
                    phi: phi.to_vec(),
                    expected: self.expected.clone(),
                    margin: margin.to_vec(),
                }),
        );
        rest
    }

    pub fn explain(&self, row: &[f32]) -> TreeShap {
        let outputs = self.ensemble.outputs;
        let mut phi = vec![0.0; self.ensemble.width * outputs];
        let mut margin = self.ensemble.base.clone();
        self.accumulate(|tree, prepared, scale| match prepared {
            Some(prepared) => {
                quadrature::accumulate(tree, prepared, row, outputs, scale, &mut phi, &mut margin)
            }
            None => self.classic(tree, row, scale, &mut phi, &mut margin),
        });
        TreeShap {
            phi,
            expected: self.expected.clone(),
            margin,
        }
    }

    /// Calls `add` for each tree with its quadrature tables, if any.
    fn accumulate(&self, mut add: impl FnMut(&Tree, Option<&quadrature::Prepared>, f64)) {
        let scale = self.ensemble.scale();
        for (tree, prepared) in self.ensemble.trees.iter().zip(&self.quadrature) {
            add(tree, prepared.as_ref(), scale);
        }
    }

    /// The classic recursion, for a tree too deep for quadrature; the row's
    /// leaf is found on its own.
    fn classic(&self, tree: &Tree, row: &[f32], scale: f64, phi: &mut [f64], margin: &mut [f64]) {
        tree.add_to_margins(row, scale, margin);
        let mut path = vec![PathElement::default(); self.buffer_len];
        Walk {
            tree,
            row,
            outputs: self.ensemble.outputs,
            scale,
            phi,
            path: &mut path,
        }
        .recurse(0, 0, 0, 1.0, 1.0, None);
    }
}

/// The cover-weighted mean leaf value of output `k`.
fn tree_expectation(tree: &Tree, outputs: usize, k: usize) -> f64 {
    fn go(tree: &Tree, outputs: usize, k: usize, node: usize) -> f64 {
        match &tree.nodes[node].split {
            None => tree.values[node * outputs + k],
            Some(s) => {
                let (cy, cn) = (tree.nodes[s.yes].cover, tree.nodes[s.no].cover);
                let total = cy + cn;
                if total <= 0.0 {
                    return 0.5 * (go(tree, outputs, k, s.yes) + go(tree, outputs, k, s.no));
                }
                (cy * go(tree, outputs, k, s.yes) + cn * go(tree, outputs, k, s.no)) / total
            }
        }
    }
    go(tree, outputs, k, 0)
}

struct Walk<'t, 'b> {
    tree: &'t Tree,
    row: &'t [f32],
    outputs: usize,
    scale: f64,
    phi: &'b mut [f64],
    path: &'b mut [PathElement],
}

impl Walk<'_, '_> {
    /// Visits `node`. The parent's path occupies `path[parent..=parent + depth]`
    /// (valid up to `depth - 1`); this node's path is written right after it.
    fn recurse(
        &mut self,
        node: usize,
        parent: usize,
        depth: usize,
        zero: f64,
        one: f64,
        feature: Option<usize>,
    ) {
        let at = parent + depth + 1;
        self.path.copy_within(parent..parent + depth + 1, at);
        extend(&mut self.path[at..], depth, zero, one, feature);
        let tree = self.tree;
        match &tree.nodes[node].split {
            None => {
                for i in 1..=depth {
                    let w = unwound_sum(&self.path[at..], depth, i);
                    let e = self.path[at + i];
                    let f = e.feature.expect("only the root element has no feature");
                    let factor = self.scale * w * (e.one_fraction - e.zero_fraction);
                    for k in 0..self.outputs {
                        self.phi[f * self.outputs + k] +=
                            factor * tree.values[node * self.outputs + k];
                    }
                }
            }
            Some(split) => {
                let ((hot, hot_zero), (cold, cold_zero)) =
                    tree.hot_cold(split, self.row[split.feature]);
                let mut depth = depth;
                let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
                // A feature already on the path is split again: undo the
                // earlier split so each feature appears once.
                if let Some(k) =
                    (1..=depth).find(|&k| self.path[at + k].feature == Some(split.feature))
                {
                    incoming_zero = self.path[at + k].zero_fraction;
                    incoming_one = self.path[at + k].one_fraction;
                    unwind(&mut self.path[at..], depth, k);
                    depth -= 1;
                }
                self.recurse(
                    hot,
                    at,
                    depth + 1,
                    hot_zero * incoming_zero,
                    incoming_one,
                    Some(split.feature),
                );
                self.recurse(
                    cold,
                    at,
                    depth + 1,
                    cold_zero * incoming_zero,
                    0.0,
                    Some(split.feature),
                );
            }
        }
    }
}

fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: Option<usize>) {
    path[depth] = PathElement {
        feature,
        zero_fraction: zero,
        one_fraction: one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d = depth as f64;
    for i in (0..depth).rev() {
        let fi = i as f64;
        path[i + 1].weight += one * path[i].weight * (fi + 1.0) / (d + 1.0);
        path[i].weight = zero * path[i].weight * (d - fi) / (d + 1.0);
    }
}

fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let (one, zero) = (path[index].one_fraction, path[index].zero_fraction);
    let d = depth as f64;
    let mut next = path[depth].weight;
    for i in (0..depth).rev() {
        let fi = i as f64;
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next * (d + 1.0) / ((fi + 1.0) * one);
            next = tmp - path[i].weight * zero * (d - fi) / (d + 1.0);
        } else {
            path[i].weight = path[i].weight * (d + 1.0) / (zero * (d - fi));
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let (one, zero) = (path[index].one_fraction, path[index].zero_fraction);
    let d = depth as f64;
    let mut next = path[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        let fi = i as f64;
        if one != 0.0 {
            let tmp = next * (d + 1.0) / ((fi + 1.0) * one);
            total += tmp;
            next = path[i].weight - tmp * zero * ((d - fi) / (d + 1.0));
        } else if zero != 0.0 {
            total += (path[i].weight / zero) / ((d - fi) / (d + 1.0));
        }
    }
    total
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::explain::trees::{MemberSet, Mode, Node, PostTransform, Split};

    /// The path-dependent value of coalition `s` (a bitmask): features in the
    /// coalition follow the row, the others both branches by cover.
    fn coalition_value(tree: &Tree, row: &[f32], s: u32, node: usize) -> f64 {
        match &tree.nodes[node].split {
            None => tree.values[node],
            Some(split) if s & (1 << split.feature) != 0 => {
                coalition_value(tree, row, s, split.next(row[split.feature]))
            }
            Some(split) => {
                let (cy, cn) = (tree.nodes[split.yes].cover, tree.nodes[split.no].cover);
                (cy * coalition_value(tree, row, s, split.yes)
                    + cn * coalition_value(tree, row, s, split.no))
                    / (cy + cn)
            }
        }
    }

    /// Shapley values by enumerating every coalition.
    fn brute_force(ensemble: &Ensemble, row: &[f32]) -> Vec<f64> {
        let v: Vec<f64> = (0u32..1 << ensemble.width)
            .map(|s| {
                ensemble
                    .trees
                    .iter()
                    .map(|t| coalition_value(t, row, s, 0))
                    .sum()
            })
            .collect();
        crate::explain::sampling::shapley(ensemble.width, &v)
    }

    /// A tree in pre-order: (split feature, threshold, NaN goes true, mode
    /// code) or a leaf (value, cover).
    type Flat = Vec<(Option<(usize, f32, bool, u8)>, f64, u32)>;

    /// A random tree of depth ≤ `depth` over `width` features with positive
    /// covers that add up (a parent's cover is its children's sum).
    pub(crate) fn tree(width: usize, depth: u32) -> impl Strategy<Value = Tree> {
        let leaf = (-3.0..3.0f64, 1u32..20).prop_map(|(v, c)| -> Flat { vec![(None, v, c)] });
        leaf.prop_recursive(depth, 32, 2, move |inner| {
            (
                0..width,
                0u8..10,
                any::<bool>(),
                0u8..7,
                inner.clone(),
                inner,
            )
                .prop_map(|(f, t, missing, mode, yes, no)| {
                    let mut flat: Flat =
                        vec![(Some((f, f32::from(t) * 0.5, missing, mode)), 0.0, 0)];
                    flat.extend(yes);
                    flat.extend(no);
                    flat
                })
        })
        .prop_map(build)
    }

    /// Turns a pre-order list into a tree: each split's children follow it,
    /// the true subtree first.
    fn build(flat: Flat) -> Tree {
        fn go(
            flat: &Flat,
            at: usize,
            nodes: &mut Vec<Node>,
            values: &mut Vec<f64>,
        ) -> (usize, usize) {
            let me = nodes.len();
            nodes.push(Node {
                split: None,
                cover: 0.0,
                id: 0,
            });
            values.push(0.0);
            match flat[at].0 {
                None => {
                    values[me] = flat[at].1;
                    nodes[me].cover = f64::from(flat[at].2);
                    (me, at + 1)
                }
                Some((feature, threshold, missing, mode)) => {
                    let (yes, next) = go(flat, at + 1, nodes, values);
                    let (no, next) = go(flat, next, nodes, values);
                    nodes[me].cover = nodes[yes].cover + nodes[no].cover;
                    nodes[me].split = Some(Split {
                        feature,
                        threshold,
                        // Every ORT mode, MEMBER with a two-value set.
                        mode: match mode {
                            0 => Mode::Leq,
                            1 => Mode::Lt,
                            2 => Mode::Gte,
                            3 => Mode::Gt,
                            4 => Mode::Eq,
                            5 => Mode::Neq,
                            _ => Mode::Member(MemberSet::new(vec![threshold, threshold + 1.0])),
                        },
                        missing_tracks_true: missing,
                        yes,
                        no,
                    });
                    (me, next)
                }
            }
        }
        let (mut nodes, mut values) = (vec![], vec![]);
        go(&flat, 0, &mut nodes, &mut values);
        Tree {
            id: 0,
            nodes,
            values,
        }
    }

    pub(crate) fn ensemble(trees: Vec<Tree>, width: usize) -> Ensemble {
        Ensemble {
            trees,
            outputs: 1,
            base: vec![0.25],
            average: false,
            post_transform: PostTransform::None,
            width,
        }
    }

    pub(crate) fn row(width: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(
            prop_oneof![9 => (0u8..10).prop_map(|v| v as f32 * 0.5), 1 => Just(f32::NAN)],
            width,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// TreeSHAP equals the Shapley values of the path-dependent game, and
        /// is efficient: base + Σφ equals the margin.
        #[test]
        fn equals_brute_force_shapley(trees in proptest::collection::vec(tree(6, 4), 1..4), x in row(6)) {
            let e = ensemble(trees, 6);
            let shap = PathDependent::new(e.clone()).explain(&x);
            let exact = brute_force(&e, &x);
            for (a, b) in shap.phi.iter().zip(&exact) {
                prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}");
            }
            // The walk's margin is the ensemble's, bit for bit.
            prop_assert_eq!(&shap.margin, &e.margins(&x));
            let margin = shap.margin[0];
            let total = shap.expected[0] + shap.phi.iter().sum::<f64>();
            prop_assert!((total - margin).abs() < 1e-9, "{total} vs {margin}");
        }

        /// The classic recursion, which serves trees too deep for the
        /// quadrature rule, agrees with quadrature and brute force.
        #[test]
        fn classic_recursion_agrees(trees in proptest::collection::vec(tree(6, 4), 1..4), x in row(6)) {
            let e = ensemble(trees, 6);
            let mut classic = PathDependent::new(e.clone());
            classic.quadrature.iter_mut().for_each(|p| *p = None);
            let (a, b) = (classic.explain(&x), PathDependent::new(e.clone()).explain(&x));
            let exact = brute_force(&e, &x);
            prop_assert_eq!(&a.margin, &e.margins(&x));
            for ((classic, quadrature), exact) in a.phi.iter().zip(&b.phi).zip(&exact) {
                prop_assert!((classic - quadrature).abs() < 1e-9, "{classic} vs {quadrature}");
                prop_assert!((classic - exact).abs() < 1e-9);
            }
        }

        /// Rows walked in blocks get what they get one by one, also where
        /// no training sample went (zero covers), with NaNs and under
        /// AVERAGE; both walks' margins are the ensemble's.
        #[test]
        fn blocks_agree_with_single_rows(
            trees in proptest::collection::vec(tree(6, 5), 1..4),
            uncovered in proptest::collection::vec(any::<bool>(), 64),
            rows in proptest::collection::vec(row(6), 1..40),
            average in any::<bool>(),
        ) {
            let trees = trees.into_iter().map(|mut t| {
                // Nodes come in pre-order, so children sit after parents.
                for node in (0..t.nodes.len()).rev() {
                    t.nodes[node].cover = match &t.nodes[node].split {
                        None if uncovered[node % 64] => 0.0,
                        None => t.nodes[node].cover,
                        Some(s) => t.nodes[s.yes].cover + t.nodes[s.no].cover,
                    };
                }
                t
            }).collect();
            // AVERAGE scales every leaf, in the margin as in φ.
            let shap = PathDependent::new(Ensemble { average, ..ensemble(trees, 6) });
            let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            for (block, row) in shap.explain_rows(&rows).iter().zip(&rows) {
                let single = shap.explain(row);
                prop_assert_eq!(&block.expected, &single.expected);
                prop_assert_eq!(&block.margin, &shap.ensemble().margins(row));
                prop_assert_eq!(&single.margin, &shap.ensemble().margins(row));
                for (a, b) in block.phi.iter().zip(&single.phi) {
                    prop_assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
                }
            }
        }

        /// A feature no tree splits on gets exactly zero (dummy axiom).
        #[test]
        fn unused_features_get_nothing(trees in proptest::collection::vec(tree(4, 4), 1..4), x in row(6)) {
            let e = ensemble(trees, 6);
            let shap = PathDependent::new(e.clone()).explain(&x);
            prop_assert_eq!(shap.phi[4], 0.0);
            prop_assert_eq!(shap.phi[5], 0.0);
        }

        /// Attributions of a sum of ensembles are the sums (linearity).
        #[test]
        fn is_linear_in_the_trees(a in proptest::collection::vec(tree(5, 3), 1..3), b in proptest::collection::vec(tree(5, 3), 1..3), x in row(5)) {
            let (ea, eb) = (ensemble(a.clone(), 5), ensemble(b.clone(), 5));
            let both = ensemble(a.into_iter().chain(b).collect(), 5);
            let (pa, pb, pab) = (PathDependent::new(ea).explain(&x), PathDependent::new(eb).explain(&x), PathDependent::new(both).explain(&x));
            for i in 0..5 {
                prop_assert!((pa.phi[i] + pb.phi[i] - pab.phi[i]).abs() < 1e-9);
            }
        }
    }

    /// Two features that play the same role get the same attribution
    /// (symmetry): f = 1 if x0 ≤ 0.5 and x1 ≤ 0.5, covers even.
    #[test]
    fn symmetric_features_share_equally() {
        let split = |feature, yes, no| {
            Some(Split {
                feature,
                threshold: 0.5,
                mode: Mode::Leq,
                missing_tracks_true: false,
                yes,
                no,
            })
        };
        let tree = Tree {
            id: 0,
            nodes: vec![
                Node {
                    split: split(0, 1, 4),
                    cover: 4.0,
                    id: 0,
                },
                Node {
                    split: split(1, 2, 3),
                    cover: 2.0,
                    id: 0,
                },
                Node {
                    split: None,
                    cover: 1.0,
                    id: 0,
                },
                Node {
                    split: None,
                    cover: 1.0,
                    id: 0,
                },
                Node {
                    split: None,
                    cover: 2.0,
                    id: 0,
                },
            ],
            values: vec![0.0, 0.0, 1.0, 0.0, 0.0],
        };
        let shap = PathDependent::new(ensemble(vec![tree], 2)).explain(&[0.0, 0.0]);
        assert!((shap.phi[0] - shap.phi[1]).abs() < 1e-12);
        assert!((shap.expected[0] - 0.5).abs() < 1e-12);
        assert!((shap.phi[0] + shap.phi[1] - 0.75).abs() < 1e-12);
    }
}
