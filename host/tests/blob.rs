//! The device blob of the shipped two-moons model against the host: the `no_std` network
//! (`elbo_core::mlp`) predicts what the host network predicts (to f32 rounding: the sums run in
//! a different order), and its schedule table is the host's, bit for bit.

use elbo::model::Trained;
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::mlp::ModelBlob;

fn shipped() -> (Trained, Vec<u8>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons");
    (Trained::load(&dir).unwrap(), std::fs::read(dir.join("model.bin")).unwrap())
}

#[test]
fn blob_network_matches_the_host_network() {
    let (mut host, bytes) = shipped();
    let blob = ModelBlob::parse(&bytes).unwrap();
    let mut dev = blob.denoiser();
    let sched = host.schedule().unwrap();
    let x: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.77).sin() * 1.5).collect();
    let mut worst = 0.0f32;
    for t in [1usize, 2, 50, 500, 999, 1000] {
        let level = NoiseLevel::of(&sched.step(t).unwrap());
        let (mut a, mut b) = (vec![0.0f32; 64], vec![0.0f32; 64]);
        host.predict(&x, level, Condition::Unconditional, &mut a).unwrap();
        dev.predict(&x, level, Condition::Unconditional, &mut b).unwrap();
        for (p, q) in a.iter().zip(&b) {
            worst = worst.max((p - q).abs() / (1.0 + p.abs()));
        }
    }
    assert!(worst < 1e-5, "worst relative difference {worst}");
    let bs = blob.schedule();
    assert_eq!(bs.steps(), sched.steps());
    for t in 1..=sched.steps() {
        assert_eq!(bs.step(t).unwrap(), sched.step(t).unwrap(), "t = {t}");
    }
    for d in 0..2 {
        assert_eq!(blob.normalization(d), (host.normalization.mean[d], host.normalization.std[d]));
    }
}

#[test]
fn export_writes_the_shipped_blob_and_rejects_bad_blobs() {
    let (host, bytes) = shipped();
    assert_eq!(
        elbo::cli::export_blob(&host).unwrap(),
        bytes,
        "the shipped model.bin is the export of the shipped checkpoint"
    );
    assert!(ModelBlob::parse(&bytes[..bytes.len() - 1]).is_err());
    assert!(ModelBlob::parse(b"ELBOMLP0").is_err());
    let mut wrong = bytes.clone();
    wrong[8 + 4 * 6] = 9; // prediction code
    assert!(ModelBlob::parse(&wrong).is_err());
}
