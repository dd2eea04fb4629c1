//! Path-dependent TreeSHAP by Gauss–Legendre quadrature.
//!
//! Along one root-to-leaf path, each unique feature j contributes a factor
//! zⱼ + t(oⱼ − zⱼ), where zⱼ is the cover fraction of the path's branches on
//! j and oⱼ ∈ {0, 1} says whether the row follows them. The leaf's Shapley
//! value for feature i is v·(oᵢ − zᵢ)·∫₀¹ Πⱼ≠ᵢ (zⱼ + t(oⱼ − zⱼ)) dt. The
//! integrand is a polynomial of degree < 16 when a path has at most 16 unique
//! features, so an 8-point Gauss–Legendre rule computes it exactly. Each path
//! element carries its factor at the 8 nodes, and each subtree returns the sum
//! of its leaves' v·Πfactors, so an element settles its whole attribution once
//! where it enters the path: O(8) work per node, against the classic
//! algorithm's O(D²) per leaf.

use super::trees::Tree;

/// Gauss–Legendre nodes and weights, mapped from [−1, 1] to [0, 1].
const NODES: [f64; 8] = {
    const X: [f64; 4] = [
        0.183_434_642_495_649_8,
        0.525_532_409_916_329,
        0.796_666_477_413_626_7,
        0.960_289_856_497_536_3,
    ];
    [
        (1.0 - X[3]) / 2.0,
        (1.0 - X[2]) / 2.0,
        (1.0 - X[1]) / 2.0,
        (1.0 - X[0]) / 2.0,
        (1.0 + X[0]) / 2.0,
        (1.0 + X[1]) / 2.0,
        (1.0 + X[2]) / 2.0,
        (1.0 + X[3]) / 2.0,
    ]
};
const WEIGHTS: [f64; 8] = {
    const W: [f64; 4] = [
        0.362_683_783_378_362,
        0.313_706_645_877_887_3,
        0.222_381_034_453_374_5,
        0.101_228_536_290_376_3,
    ];
    [
        W[3] / 2.0,
        W[2] / 2.0,
        W[1] / 2.0,
        W[0] / 2.0,
        W[0] / 2.0,
        W[1] / 2.0,
        W[2] / 2.0,
        W[3] / 2.0,
    ]
};

/// The most unique features on one path for which the rule is exact.
pub const MAX_UNIQUE_FEATURES: usize = 16;

type Lanes = [f64; 8];

#[derive(Clone, Copy)]
struct Element {
    feature: usize,
    zero: f64,
    one: f64,
    /// w_q / factor(t_q): the weight of this element's integral at each node.
    inv: Lanes,
    /// Σ v·P over leaves below this element where a later split on the same
    /// feature replaced it: they do not carry its factor.
    replaced: Lanes,
}

/// Adds one tree's attributions for `row` to `phi[feature * outputs + k]`.
pub fn accumulate(tree: &Tree, row: &[f32], outputs: usize, scale: f64, phi: &mut [f64]) {
    for k in 0..outputs {
        let mut walk = Walk {
            tree,
            row,
            outputs,
            output: k,
            scale,
            phi: &mut *phi,
            path: Vec::with_capacity(MAX_UNIQUE_FEATURES),
        };
        walk.visit(0, [1.0; 8]);
    }
}

struct Walk<'a> {
    tree: &'a Tree,
    row: &'a [f32],
    outputs: usize,
    output: usize,
    scale: f64,
    phi: &'a mut [f64],
    path: Vec<Element>,
}

impl Walk<'_> {
    /// `product[q]` is Π factor(t_q) over the elements on the path. Returns
    /// Σ v·P(t_q) over the leaves below `node`, from which every element
    /// settles its attribution once, where it was pushed: O(8) work per node
    /// instead of O(8·D) per leaf.
    fn visit(&mut self, node: usize, product: Lanes) -> Lanes {
        let tree = self.tree;
        let Some(split) = &tree.nodes[node].split else {
            let v = tree.values[node * self.outputs + self.output];
            return product.map(|p| v * p);
        };
        let ((hot, hot_zero), (cold, cold_zero)) = tree.hot_cold(split, self.row[split.feature]);

        // A feature split on again merges with its earlier element.
        let mut base = product;
        let (mut zero, mut one) = (1.0, 1.0);
        let previous = self.path.iter().position(|e| e.feature == split.feature);
        let removed = previous.map(|k| {
            let e = self.path.remove(k);
            for q in 0..8 {
                // inv holds w_q / factor, so this divides the factor out.
                base[q] *= e.inv[q] / WEIGHTS[q];
            }
            (zero, one) = (e.zero, e.one);
            (k, e)
        });
        let mut total = [0.0; 8];
        for (child, z, o) in [(hot, hot_zero * zero, one), (cold, cold_zero * zero, 0.0)] {
            if z == 0.0 && o == 0.0 {
                // Neither the row nor any sample goes this way: no coalition
                // reaches the subtree, so it contributes nothing.
                continue;
            }
            let mut inv = [0.0; 8];
            let mut next = base;
            for q in 0..8 {
                let factor = z + NODES[q] * (o - z);
                next[q] *= factor;
                inv[q] = WEIGHTS[q] / factor;
            }
            self.path.push(Element {
                feature: split.feature,
                zero: z,
                one: o,
                inv,
                replaced: [0.0; 8],
            });
            let below = self.visit(child, next);
            let e = self.path.pop().expect("pushed above");
            let integral: f64 = (0..8).map(|q| (below[q] - e.replaced[q]) * e.inv[q]).sum();
            self.phi[split.feature * self.outputs + self.output] += self.scale * (o - z) * integral;
            for (t, b) in total.iter_mut().zip(below) {
                *t += b;
            }
        }
        if let Some((k, mut e)) = removed {
            for (r, t) in e.replaced.iter_mut().zip(total) {
                *r += t;
            }
            self.path.insert(k, e);
        }
        total
    }
}

/// The most unique features on any root-to-leaf path of `tree`.
pub fn max_unique_features(tree: &Tree) -> usize {
    fn go(tree: &Tree, node: usize, seen: &mut Vec<usize>) -> usize {
        let Some(s) = &tree.nodes[node].split else {
            return seen.len();
        };
        let fresh = !seen.contains(&s.feature);
        if fresh {
            seen.push(s.feature);
        }
        let deepest = go(tree, s.yes, seen).max(go(tree, s.no, seen));
        if fresh {
            seen.pop();
        }
        deepest
    }
    go(tree, 0, &mut Vec::new())
}
