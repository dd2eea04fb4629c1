//! Path-dependent TreeSHAP by Gauss–Legendre quadrature.
//!
//! Along one root-to-leaf path, each unique feature j contributes a factor
//! zⱼ + t(oⱼ − zⱼ), where zⱼ is the cover fraction of the path's branches on
//! j and oⱼ ∈ {0, 1} says whether the row follows them. The leaf's Shapley
//! value for feature i is v·(oᵢ − zᵢ)·∫₀¹ Πⱼ≠ᵢ (zⱼ + t(oⱼ − zⱼ)) dt. With at
//! most D unique features on any path of a tree, the integrand is a
//! polynomial of degree < D, which an n-point Gauss–Legendre rule integrates
//! exactly once 2n ≥ D: each tree gets the smallest such rule (n ≤ 8, so
//! D ≤ 16). Each path element carries its factor at the n nodes, and each
//! subtree returns the sum of its leaves' v·Πfactors, so an element settles
//! its whole attribution once, where it enters the path: O(n) work per node,
//! against the classic algorithm's O(D²) per leaf.
//!
//! Settling needs the subtree sums without the element's own factor. For a
//! branch the row does not take, (0 − z)/(z·(1 − t)) = −1/(1 − t): its z
//! cancels, leaving constants. Only the taken branch divides by its factor:
//! n divisions per node. (A table of those quotients, fixed at load, made the
//! walks memory-bound and slower.)

use super::trees::Tree;

/// The most points of a rule, hence the most unique features on one path
/// (twice as many) for which quadrature is exact.
const MAX_POINTS: usize = 8;

pub const MAX_UNIQUE_FEATURES: usize = 2 * MAX_POINTS;

type Lanes<const N: usize> = [f64; N];

/// The n-point Gauss–Legendre rule mapped to [0, 1], n ≤ [`MAX_POINTS`],
/// in the first n lanes; computed once per tree at load.
#[derive(Debug, Clone, Copy)]
struct Rule {
    points: usize,
    nodes: [f64; MAX_POINTS],
    weights: [f64; MAX_POINTS],
}

impl Rule {
    /// Roots of the Legendre polynomial Pₙ by Newton's method (to machine
    /// precision), with weights 2/((1 − x²)·Pₙ′(x)²).
    fn new(n: usize) -> Self {
        let mut nodes = [0.0; MAX_POINTS];
        let mut weights = [0.0; MAX_POINTS];
        for i in 0..n.div_ceil(2) {
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
            for _ in 0..100 {
                let (p, dp) = legendre(n, x);
                let step = p / dp;
                x -= step;
                if step.abs() <= 1e-16 {
                    break;
                }
            }
            let (_, dp) = legendre(n, x);
            let w = 1.0 / ((1.0 - x * x) * dp * dp);
            (nodes[i], weights[i]) = ((1.0 - x) / 2.0, w);
            (nodes[n - 1 - i], weights[n - 1 - i]) = ((1.0 + x) / 2.0, w);
        }
        Self {
            points: n,
            nodes,
            weights,
        }
    }

    /// The rule as fixed-size lanes for a walk.
    fn lanes<const N: usize>(&self) -> Points<N> {
        debug_assert_eq!(N, self.points);
        Points {
            nodes: std::array::from_fn(|q| self.nodes[q]),
            weights: std::array::from_fn(|q| self.weights[q]),
            not_taken: std::array::from_fn(|q| self.weights[q] / (1.0 - self.nodes[q])),
        }
    }
}

/// A rule's nodes and weights as lanes of the walk's width.
#[derive(Clone, Copy)]
struct Points<const N: usize> {
    nodes: Lanes<N>,
    weights: Lanes<N>,
    /// w_q/(1 − t_q): the weights of a branch the row does not take.
    not_taken: Lanes<N>,
}

impl<const N: usize> Points<N> {
    /// w_q/(z + t_q(1 − z)): the weights of a taken branch with cover share z.
    fn taken(&self, z: f64) -> Lanes<N> {
        std::array::from_fn(|q| self.weights[q] / (z + self.nodes[q] * (1.0 - z)))
    }
}

/// Pₙ(x) and Pₙ′(x), by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut previous, mut p) = (1.0, x);
    for k in 2..=n {
        let k = k as f64;
        (previous, p) = (p, ((2.0 * k - 1.0) * x * p - (k - 1.0) * previous) / k);
    }
    (p, n as f64 * (x * p - previous) / (x * x - 1.0))
}

/// What a tree's walks read at every node, computed once at load.
#[derive(Debug)]
pub struct Prepared {
    /// The fewest points exact for the tree.
    rule: Rule,
    /// Per node: the yes and the no child's share of its cover.
    shares: Vec<[f64; 2]>,
}

impl Prepared {
    /// `None` when a path has more unique features than any rule here is
    /// exact for.
    pub fn new(tree: &Tree) -> Option<Self> {
        let unique = max_unique_features(tree);
        if unique > MAX_UNIQUE_FEATURES {
            return None;
        }
        let shares = tree
            .nodes
            .iter()
            .map(|n| n.split.as_ref().map_or([0.0; 2], |s| tree.shares(s).into()))
            .collect();
        Some(Self {
            rule: Rule::new(unique.div_ceil(2).max(1).next_multiple_of(2)),
            shares,
        })
    }
}

/// One unique feature on the path: what later splits on it merge with.
#[derive(Clone, Copy)]
struct Element {
    feature: usize,
    zero: f64,
    one: f64,
}

impl Element {
    /// The factor z + t(o − z) at each node.
    fn factor<const N: usize>(&self, rule: &Points<N>) -> Lanes<N> {
        std::array::from_fn(|q| self.zero + rule.nodes[q] * (self.one - self.zero))
    }

    /// How the element settles: `coefficient · Σ_q weights_q·S_q` for the
    /// sums S of v·P over the leaves that carry its factor. A taken branch
    /// has (1 − z) and [`Points::taken`]; a branch not taken −1 and
    /// [`Points::not_taken`].
    fn settlement<const N: usize>(&self, rule: &Points<N>) -> (Lanes<N>, f64) {
        if self.one == 1.0 {
            (rule.taken(self.zero), 1.0 - self.zero)
        } else {
            (rule.not_taken, -1.0)
        }
    }
}

fn dot<const N: usize>(a: &Lanes<N>, b: &Lanes<N>) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Adds one tree's attributions for `row` to `phi[feature * outputs + k]`,
/// and the value of the leaf the row lands in (times `scale`) to
/// `margin[k]`.
pub fn accumulate(
    tree: &Tree,
    prepared: &Prepared,
    row: &[f32],
    outputs: usize,
    scale: f64,
    phi: &mut [f64],
    margin: &mut [f64],
) {
    let site = Site {
        tree,
        shares: &prepared.shares,
        row,
        outputs,
        output: 0,
        scale,
        phi,
        margin,
    };
    let walk = match prepared.rule.points {
        2 => walk::<2>,
        4 => walk::<4>,
        6 => walk::<6>,
        _ => walk::<MAX_POINTS>,
    };
    walk(site, &prepared.rule);
}

/// Walks the tree once per output with the rule's lanes fixed at `N`.
fn walk<const N: usize>(mut site: Site<'_>, rule: &Rule) {
    let rule = rule.lanes::<N>();
    for output in 0..site.outputs {
        site.output = output;
        let mut walk = Walk {
            site,
            rule,
            path: Vec::with_capacity(MAX_UNIQUE_FEATURES),
        };
        walk.visit(0, &[1.0; N], true);
        site = walk.site;
    }
}

/// What a walk reads and where it adds, whatever its rule's size.
struct Site<'a> {
    tree: &'a Tree,
    shares: &'a [[f64; 2]],
    row: &'a [f32],
    outputs: usize,
    output: usize,
    scale: f64,
    phi: &'a mut [f64],
    margin: &'a mut [f64],
}

struct Walk<'a, const N: usize> {
    site: Site<'a>,
    rule: Points<N>,
    path: Vec<Element>,
}

impl<const N: usize> Walk<'_, N> {
    /// `product[q]` is Π factor(t_q) over the elements on the path. Returns
    /// Σ v·P(t_q) over the leaves below `node`, from which every element
    /// settles its attribution once, where it was pushed: O(n) work per node
    /// instead of O(n·D) per leaf. `reached`: the row itself comes here.
    fn visit(&mut self, node: usize, product: &Lanes<N>, reached: bool) -> Lanes<N> {
        let tree = self.site.tree;
        let Some(split) = &tree.nodes[node].split else {
            let v = tree.values[node * self.site.outputs + self.site.output];
            if reached {
                // As `Ensemble::margins` adds it, so the sums agree exactly.
                self.site.margin[self.site.output] += self.site.scale * v;
            }
            return product.map(|p| v * p);
        };
        let children = [split.yes, split.no];
        let taken = usize::from(!split.goes_true(self.site.row[split.feature]));
        let not_taken = 1 - taken;
        let shares = self.site.shares[node];
        let mut total = [0.0; N];
        let Some(k) = self.path.iter().position(|e| e.feature == split.feature) else {
            let z = shares[taken];
            let below = self.descend(children[taken], split.feature, z, 1.0, product, reached);
            let weights = self.rule.taken(z);
            self.settle(split.feature, 1.0 - z, &weights, &below, &mut total);
            let z = shares[not_taken];
            let below = self.descend(children[not_taken], split.feature, z, 0.0, product, false);
            let weights = self.rule.not_taken;
            self.settle(split.feature, -1.0, &weights, &below, &mut total);
            return total;
        };
        // A feature split on again merges with its earlier element: below
        // here, the element's factor leaves the product, and the merged
        // element settles in its place.
        let earlier = self.path[k];
        let factor = earlier.factor(&self.rule);
        let unfactored: Lanes<N> = std::array::from_fn(|q| product[q] / factor[q]);
        self.path[k].feature = usize::MAX;
        for side in [taken, not_taken] {
            let merged = Element {
                feature: split.feature,
                zero: shares[side] * earlier.zero,
                one: if side == taken { earlier.one } else { 0.0 },
            };
            let below = self.descend(
                children[side],
                merged.feature,
                merged.zero,
                merged.one,
                &unfactored,
                reached && side == taken,
            );
            let (weights, coefficient) = merged.settlement(&self.rule);
            self.settle(split.feature, coefficient, &weights, &below, &mut total);
        }
        self.path[k].feature = split.feature;
        // The earlier element settles when its own subtree returns, over
        // sums that include these leaves; they do not carry its factor.
        let (weights, coefficient) = earlier.settlement(&self.rule);
        self.site.phi[split.feature * self.site.outputs + self.site.output] -=
            self.site.scale * coefficient * dot(&weights, &total);
        total
    }

    /// Walks `child` with the element (feature, z, o) on the path and
    /// returns its leaf sums.
    fn descend(
        &mut self,
        child: usize,
        feature: usize,
        zero: f64,
        one: f64,
        product: &Lanes<N>,
        reached: bool,
    ) -> Lanes<N> {
        if zero == 0.0 && one == 0.0 {
            // Neither the row nor any sample goes this way: no coalition
            // reaches the subtree, so it contributes nothing.
            return [0.0; N];
        }
        let element = Element { feature, zero, one };
        let factor = element.factor(&self.rule);
        let next: Lanes<N> = std::array::from_fn(|q| product[q] * factor[q]);
        self.path.push(element);
        let below = self.visit(child, &next, reached);
        self.path.pop();
        below
    }

    /// Adds an element's attribution over the leaf sums `below`, and adds
    /// those sums to `total`.
    fn settle(
        &mut self,
        feature: usize,
        coefficient: f64,
        weights: &Lanes<N>,
        below: &Lanes<N>,
        total: &mut Lanes<N>,
    ) {
        self.site.phi[feature * self.site.outputs + self.site.output] +=
            self.site.scale * coefficient * dot(weights, below);
        for (t, b) in total.iter_mut().zip(below) {
            *t += b;
        }
    }
}

/// The lanes of every row of a block.
type Block<const N: usize, const R: usize> = [Lanes<N>; R];

/// Adds one tree's attributions for a block of R rows, row r's to
/// `phi[r * stride + feature * outputs + k]`, and the value of the leaf row
/// r lands in (times `scale`) to `margins[r * outputs + k]`.
///
/// [`accumulate`] stays for a row alone: following the row's own branches
/// measured faster than a block of one (5.8k against 5.6k rows/s on Caravan,
/// 1.5k against 1.2k on the stress model).
///
/// All rows of a block walk the same nodes in the same order: path-dependent
/// TreeSHAP visits every node whatever the row, and only whether each row
/// takes a branch differs. So the work that depends on the node alone (the
/// branch weights and their divisions, the path scan, the split's mode) is
/// done once per block, and what differs per row is picked by index, never by
/// a branch the predictor would have to guess.
pub fn accumulate_block<const R: usize>(
    tree: &Tree,
    prepared: &Prepared,
    rows: &[&[f32]; R],
    outputs: usize,
    scale: f64,
    phi: &mut [f64],
    margins: &mut [f64],
) {
    // Which rows reach a node is a bit mask.
    const { assert!(R <= 32) };
    let stride = phi.len() / R;
    let site = BlockSite {
        tree,
        shares: &prepared.shares,
        rows,
        outputs,
        output: 0,
        scale,
        stride,
        phi,
        margins,
    };
    let walk = match prepared.rule.points {
        2 => block_walk::<2, R>,
        4 => block_walk::<4, R>,
        6 => block_walk::<6, R>,
        _ => block_walk::<MAX_POINTS, R>,
    };
    walk(site, &prepared.rule);
}

fn block_walk<const N: usize, const R: usize>(mut site: BlockSite<'_, R>, rule: &Rule) {
    let rule = rule.lanes::<N>();
    for output in 0..site.outputs {
        site.output = output;
        let mut walk = BlockWalk {
            site,
            rule,
            path: Vec::with_capacity(MAX_UNIQUE_FEATURES),
        };
        walk.visit(0, &[[1.0; N]; R], mask([true; R]));
        site = walk.site;
    }
}

struct BlockSite<'a, const R: usize> {
    tree: &'a Tree,
    shares: &'a [[f64; 2]],
    rows: &'a [&'a [f32]; R],
    outputs: usize,
    output: usize,
    scale: f64,
    stride: usize,
    phi: &'a mut [f64],
    margins: &'a mut [f64],
}

/// A unique feature on a block's path: its cover share, and per row whether
/// the row follows its branches.
#[derive(Clone, Copy)]
struct BlockElement<const R: usize> {
    feature: usize,
    zero: f64,
    ones: [bool; R],
}

/// What one cover share z gives every row of a block, indexed by o ∈ {0, 1}.
struct Side<const N: usize> {
    /// The factor z + t(o − z) at each node.
    factors: [Lanes<N>; 2],
    /// The settlement's weights and coefficient (see [`Element::settlement`]).
    weights: [Lanes<N>; 2],
    coefficients: [f64; 2],
}

impl<const N: usize> Side<N> {
    fn new(zero: f64, rule: &Points<N>) -> Self {
        let (not_taken, taken) = (
            Element {
                feature: 0,
                zero,
                one: 0.0,
            },
            Element {
                feature: 0,
                zero,
                one: 1.0,
            },
        );
        let (w0, c0) = not_taken.settlement(rule);
        let (w1, c1) = taken.settlement(rule);
        Self {
            factors: [not_taken.factor(rule), taken.factor(rule)],
            weights: [w0, w1],
            coefficients: [c0, c1],
        }
    }
}

struct BlockWalk<'a, const N: usize, const R: usize> {
    site: BlockSite<'a, R>,
    rule: Points<N>,
    path: Vec<BlockElement<R>>,
}

impl<const N: usize, const R: usize> BlockWalk<'_, N, R> {
    /// [`Walk::visit`] for every row of the block at once; bit r of
    /// `reached` is set when row r itself comes here.
    fn visit(&mut self, node: usize, product: &Block<N, R>, reached: u32) -> Block<N, R> {
        let tree = self.site.tree;
        let Some(split) = &tree.nodes[node].split else {
            let v = tree.values[node * self.site.outputs + self.site.output];
            // Each row reaches one leaf per tree: visit set bits only.
            let mut rows = reached;
            while rows != 0 {
                let r = rows.trailing_zeros() as usize;
                rows &= rows - 1;
                self.site.margins[r * self.site.outputs + self.site.output] += self.site.scale * v;
            }
            return product.map(|row| row.map(|p| v * p));
        };
        let mut values = [0.0; R];
        for (v, row) in values.iter_mut().zip(self.site.rows) {
            *v = row[split.feature];
        }
        let yes = split.each_goes_true(values);
        let children = [(split.yes, yes), (split.no, yes.map(|y| !y))];
        let goes_yes = mask(yes);
        let reaches = [reached & goes_yes, reached & !goes_yes];
        let shares = self.site.shares[node];
        let mut total = [[0.0; N]; R];
        let Some(k) = self.path.iter().position(|e| e.feature == split.feature) else {
            for (((child, ones), z), reached) in children.into_iter().zip(shares).zip(reaches) {
                let side = Side::new(z, &self.rule);
                let element = BlockElement {
                    feature: split.feature,
                    zero: z,
                    ones,
                };
                let below = self.descend(child, element, &side, product, reached);
                self.settle(split.feature, &side, ones, &below, &mut total);
            }
            return total;
        };
        let earlier = self.path[k];
        let side = Side::new(earlier.zero, &self.rule);
        let inverse = side
            .factors
            .map(|f| f.map(|f| if f == 0.0 { 0.0 } else { 1.0 / f }));
        let unfactored: Block<N, R> = std::array::from_fn(|r| {
            let inverse = &inverse[usize::from(earlier.ones[r])];
            std::array::from_fn(|q| product[r][q] * inverse[q])
        });
        self.path[k].feature = usize::MAX;
        for (((child, follows), z), reached) in children.into_iter().zip(shares).zip(reaches) {
            let zero = z * earlier.zero;
            let ones = std::array::from_fn(|r| follows[r] && earlier.ones[r]);
            let merged = Side::new(zero, &self.rule);
            let element = BlockElement {
                feature: split.feature,
                zero,
                ones,
            };
            let below = self.descend(child, element, &merged, &unfactored, reached);
            self.settle(split.feature, &merged, ones, &below, &mut total);
        }
        self.path[k].feature = split.feature;
        for (r, row) in total.iter().enumerate() {
            let o = usize::from(earlier.ones[r]);
            let at = self.index(r, split.feature);
            self.site.phi[at] -=
                self.site.scale * side.coefficients[o] * dot(&side.weights[o], row);
        }
        total
    }

    fn descend(
        &mut self,
        child: usize,
        element: BlockElement<R>,
        side: &Side<N>,
        product: &Block<N, R>,
        reached: u32,
    ) -> Block<N, R> {
        if element.zero == 0.0 && !element.ones.contains(&true) {
            return [[0.0; N]; R];
        }
        let next: Block<N, R> = std::array::from_fn(|r| {
            let factor = &side.factors[usize::from(element.ones[r])];
            std::array::from_fn(|q| product[r][q] * factor[q])
        });
        self.path.push(element);
        let below = self.visit(child, &next, reached);
        self.path.pop();
        below
    }

    fn settle(
        &mut self,
        feature: usize,
        side: &Side<N>,
        ones: [bool; R],
        below: &Block<N, R>,
        total: &mut Block<N, R>,
    ) {
        for r in 0..R {
            let o = usize::from(ones[r]);
            let at = self.index(r, feature);
            self.site.phi[at] +=
                self.site.scale * side.coefficients[o] * dot(&side.weights[o], &below[r]);
            for (t, b) in total[r].iter_mut().zip(&below[r]) {
                *t += b;
            }
        }
    }

    fn index(&self, row: usize, feature: usize) -> usize {
        row * self.site.stride + feature * self.site.outputs + self.site.output
    }
}

/// Bit r set where `bits[r]` holds.
#[inline(always)]
fn mask<const R: usize>(bits: [bool; R]) -> u32 {
    bits.iter()
        .enumerate()
        .fold(0, |mask, (r, &bit)| mask | (u32::from(bit) << r))
}

/// The most unique features on any root-to-leaf path of `tree`.
fn max_unique_features(tree: &Tree) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_integrates_polynomials_below_twice_its_points_exactly() {
        for n in 1..=MAX_POINTS {
            let rule = Rule::new(n);
            for k in 0..2 * n {
                let integral: f64 = (0..n)
                    .map(|q| rule.weights[q] * rule.nodes[q].powi(k as i32))
                    .sum();
                let exact = 1.0 / (k + 1) as f64;
                assert!(
                    (integral - exact).abs() < 1e-14,
                    "{n} points, t^{k}: {integral} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn the_eight_point_rule_matches_the_tabulated_one() {
        let rule = Rule::new(8);
        // Abramowitz & Stegun, table 25.4: x = 0.1834346424956498, w = 0.3626837833783620.
        assert!((rule.nodes[4] - (1.0 + 0.183_434_642_495_649_8) / 2.0).abs() < 1e-15);
        assert!((rule.weights[4] - 0.362_683_783_378_362 / 2.0).abs() < 1e-15);
    }
}
