//! Exact, order-independent sums of f64 values: Shewchuk's non-overlapping partials (Shewchuk
//! 1997, "Adaptive precision floating-point arithmetic and fast robust geometric predicates",
//! Theorem 10 / Grow-Expansion), whose sum is exactly the sum of the values added, and the
//! correctly rounded value of that sum (as Python's `math.fsum`). Adding the partials of
//! several accumulators to one gives exactly the sum of all their values, so sharded
//! evaluations merge to the same bits as the whole run, in any order.

use serde::{Deserialize, Serialize};

/// An exact sum of finite values, held as non-overlapping partials in increasing magnitude.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    /// The empty sum.
    pub fn new() -> Self {
        ExactSum::default()
    }

    /// Adds `x` (finite; a non-finite value makes the value NaN or infinite, never wrong
    /// silently: it stays among the partials).
    pub fn add(&mut self, mut x: f64) {
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// Adds every value of another sum (exactly).
    pub fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The sum, correctly rounded to f64 (round half to even), whatever the order of the
    /// values added.
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        if p.iter().any(|v| !v.is_finite()) {
            return p.iter().sum();
        }
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // half-way cases: the rest of the partials decide the rounding direction
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }

    /// The exact sum of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut s = ExactSum::new();
        for v in values {
            s.add(v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::ExactSum;

    #[test]
    fn sums_exactly_where_naive_summation_fails() {
        // 1e100 + 1 - 1e100 = 1 exactly; naive left-to-right gives 0
        assert_eq!(ExactSum::of([1e100, 1.0, -1e100]).value(), 1.0);
        assert_eq!(ExactSum::of([0.1; 10]).value(), 1.0);
        // the correctly rounded sum of 2^53 + 1 + 2^-60: above the half-way point, up
        let s = ExactSum::of([9_007_199_254_740_992.0, 1.0, 2f64.powi(-60)]);
        assert_eq!(s.value(), 9_007_199_254_740_994.0);
        // without the tiny part it is a tie, to even
        assert_eq!(ExactSum::of([9_007_199_254_740_992.0, 1.0]).value(), 9_007_199_254_740_992.0);
    }

    #[test]
    fn any_order_and_any_split_give_the_same_bits() {
        let mut v: Vec<f64> = (0..2000).map(|i| ((i * 7919) % 1009) as f64 * 1.1e-3 - 0.5 + 1e-9 * i as f64).collect();
        let whole = ExactSum::of(v.iter().copied()).value();
        v.reverse();
        assert_eq!(ExactSum::of(v.iter().copied()).value().to_bits(), whole.to_bits());
        for parts in [2, 3, 7] {
            let mut merged = ExactSum::new();
            for c in v.chunks(v.len().div_ceil(parts)).rev() {
                merged.merge(&ExactSum::of(c.iter().copied()));
            }
            assert_eq!(merged.value().to_bits(), whole.to_bits(), "{parts} parts");
        }
    }
}
