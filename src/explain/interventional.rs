//! Interventional TreeSHAP: attributions against a background sample rather
//! than the trees' covers. For each background row the game is
//! v(S) = f(x_S, b_S̄); its Shapley values, averaged over the background, are
//! computed exactly in one pass per tree and background row.
//!
//! Along a tree, a split where the row and the background row go the same
//! way does not depend on its feature. Where they part, one branch takes the
//! feature from the row (set A), the other from the background row (set B).
//! A leaf reached with sets A and B is the game v·1[A ⊆ S, B ∩ S = ∅], whose
//! Shapley values are v·(|A|−1)!|B|!/(|A|+|B|)! for each i ∈ A and
//! −v·|A|!(|B|−1)!/(|A|+|B|)! for each j ∈ B.

use super::trees::{Ensemble, Tree};

/// Interventional TreeSHAP against a fixed background sample.
#[derive(Debug)]
pub struct Interventional {
    ensemble: Ensemble,
    background: Vec<f32>,
    expected: Vec<f64>,
}

impl Interventional {
    /// Uses `background` (row-major) as the reference population.
    pub fn new(ensemble: Ensemble, background: Vec<f32>) -> Self {
        let rows = (background.len() / ensemble.width.max(1)).max(1);
        let mut expected = vec![0.0; ensemble.outputs];
        for b in background.chunks(ensemble.width) {
            for (e, m) in expected.iter_mut().zip(ensemble.margins(b)) {
                *e += m / rows as f64;
            }
        }
        Self {
            ensemble,
            background,
            expected,
        }
    }

    pub fn expected(&self) -> &[f64] {
        &self.expected
    }

    /// `phi[feature * outputs + k]` for `row`.
    pub fn explain(&self, row: &[f32]) -> Vec<f64> {
        let e = &self.ensemble;
        let mut phi = vec![0.0; e.width * e.outputs];
        let rows = self.background.len() / e.width.max(1);
        let weight = e.scale() / rows.max(1) as f64;
        let depth = e.trees.iter().map(Tree::depth).max().unwrap_or(0);
        let coefficients = Coefficients::new(depth);
        let mut walk = Walk {
            row,
            reference: row,
            outputs: e.outputs,
            weight,
            coefficients: &coefficients,
            from_row: Vec::new(),
            from_reference: Vec::new(),
        };
        for reference in self.background.chunks(e.width) {
            walk.reference = reference;
            for tree in &e.trees {
                walk.visit(tree, 0, &mut phi);
            }
        }
        phi
    }
}

/// a!·b!/(a+b+1)! for a + b ≤ depth, the Shapley weight of one side.
struct Coefficients {
    table: Vec<Vec<f64>>,
}

impl Coefficients {
    fn new(depth: usize) -> Self {
        let mut factorial = vec![1.0f64; 2 * depth + 2];
        for n in 1..factorial.len() {
            factorial[n] = factorial[n - 1] * n as f64;
        }
        let table = (0..=depth)
            .map(|a| {
                (0..=depth)
                    .map(|b| {
                        if a + b < factorial.len() - 1 {
                            factorial[a] * factorial[b] / factorial[a + b + 1]
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        Self { table }
    }

    fn get(&self, a: usize, b: usize) -> f64 {
        self.table[a][b]
    }
}

struct Walk<'a> {
    row: &'a [f32],
    reference: &'a [f32],
    outputs: usize,
    weight: f64,
    coefficients: &'a Coefficients,
    from_row: Vec<usize>,
    from_reference: Vec<usize>,
}

impl Walk<'_> {
    fn visit(&mut self, tree: &Tree, node: usize, phi: &mut [f64]) {
        let Some(split) = &tree.nodes[node].split else {
            let (a, b) = (self.from_row.len(), self.from_reference.len());
            if a + b == 0 {
                return;
            }
            let values = &tree.values[node * self.outputs..(node + 1) * self.outputs];
            // i ∈ A gains (|A|−1)!|B|!/(|A|+|B|)!; j ∈ B loses |A|!(|B|−1)!/(|A|+|B|)!.
            let gain = if a > 0 {
                self.weight * self.coefficients.get(a - 1, b)
            } else {
                0.0
            };
            let loss = if b > 0 {
                self.weight * self.coefficients.get(a, b - 1)
            } else {
                0.0
            };
            for (k, v) in values.iter().enumerate() {
                for &i in &self.from_row {
                    phi[i * self.outputs + k] += gain * v;
                }
                for &j in &self.from_reference {
                    phi[j * self.outputs + k] -= loss * v;
                }
            }
            return;
        };
        let f = split.feature;
        let (by_row, by_reference) = (split.next(self.row[f]), split.next(self.reference[f]));
        if by_row == by_reference || self.from_row.contains(&f) {
            self.visit(tree, by_row, phi);
        } else if self.from_reference.contains(&f) {
            self.visit(tree, by_reference, phi);
        } else {
            self.from_row.push(f);
            self.visit(tree, by_row, phi);
            self.from_row.pop();
            self.from_reference.push(f);
            self.visit(tree, by_reference, phi);
            self.from_reference.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::explain::treeshap::tests::{ensemble, row, tree};

    /// Shapley values of v(S) = mean over b of f(x_S, b_S̄), by enumeration.
    fn brute_force(e: &Ensemble, x: &[f32], background: &[f32]) -> Vec<f64> {
        let m = e.width;
        let rows = (background.len() / m) as f64;
        let v: Vec<f64> = (0u32..1 << m)
            .map(|s| {
                background
                    .chunks(m)
                    .map(|b| {
                        let mixed: Vec<f32> = (0..m)
                            .map(|j| if s & (1 << j) != 0 { x[j] } else { b[j] })
                            .collect();
                        e.margins(&mixed)[0]
                    })
                    .sum::<f64>()
                    / rows
            })
            .collect();
        crate::explain::sampling::shapley(m, &v)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        #[test]
        fn equals_brute_force_and_adds_up(
            trees in proptest::collection::vec(tree(5, 4), 1..4),
            x in row(5),
            background in proptest::collection::vec(row(5), 1..5),
        ) {
            let e = ensemble(trees, 5);
            let background: Vec<f32> = background.concat();
            let explainer = Interventional::new(e.clone(), background.clone());
            let phi = explainer.explain(&x);
            for (a, b) in phi.iter().zip(brute_force(&e, &x, &background)) {
                prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}");
            }
            let total = explainer.expected()[0] + phi.iter().sum::<f64>();
            prop_assert!((total - e.margins(&x)[0]).abs() < 1e-9);
        }
    }
}
