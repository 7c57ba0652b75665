//! Helpers shared by the integration tests: golden files and float comparisons.
#![allow(dead_code)]

use serde_json::Value;

/// Loads `tests/golden/NAME.json` (written by `make_goldens.py`).
pub fn golden(name: &str) -> Value {
    let path = format!("{}/tests/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A JSON number (or "inf"/"-inf") as f64.
pub fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => panic!("not a number: {other}"),
    }
}

pub fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

pub fn nums_f32(v: &Value) -> Vec<f32> {
    nums(v).into_iter().map(|x| x as f32).collect()
}

/// The distance of an f32 from an f64 reference in units of the f32 spacing at the reference.
pub fn ulps(got: f32, reference: f64) -> f64 {
    if reference.is_infinite() && f64::from(got) == reference {
        return 0.0;
    }
    let r = reference as f32;
    let spacing = f64::from(f32::from_bits(r.abs().to_bits() + 1) - r.abs());
    (f64::from(got) - reference).abs() / spacing
}

/// Relative error with an absolute floor.
pub fn rel(got: f64, reference: f64, floor: f64) -> f64 {
    (got - reference).abs() / reference.abs().max(floor)
}

/// The two-sample Kolmogorov-Smirnov statistic.
pub fn ks_two_sample(a: &mut [f64], b: &mut [f64]) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// The two-sample KS critical value at level `alpha` (asymptotic).
pub fn ks_critical(alpha: f64, n: usize, m: usize) -> f64 {
    (-(alpha / 2.0).ln() / 2.0).sqrt() * ((n + m) as f64 / (n as f64 * m as f64)).sqrt()
}

pub fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, v)
}
