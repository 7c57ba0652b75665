//! A learned-variance model's variance is an explicit output of the prediction that asks for
//! it, not state left over from an earlier call: it belongs to the batch it was asked with,
//! and under classifier-free guidance it is the conditional call's.

use assert_cmd::Command;
use elbo::model::Trained;
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::sampler::ClassifierFree;

#[test]
fn the_variance_output_belongs_to_its_own_call() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lv");
    Command::cargo_bin("elbo")
        .unwrap()
        .args(["train", "--data", "rings", "--conditional", "--learn-variance", "--loss", "hybrid"])
        .args(["--steps", "5", "--batch", "16", "--n-train", "100", "--width", "16", "--timesteps", "50", "--out"])
        .arg(&out)
        .assert()
        .success();
    let mut m = Trained::load(&out).unwrap();
    assert!(m.has_variance());
    let sched = m.schedule().unwrap();
    let level = NoiseLevel::of(&sched.step(30).unwrap());
    let a: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).sin()).collect();
    let b: Vec<f32> = (0..8).map(|i| (i as f32 * 1.3).cos() * 2.0).collect();
    let labels = [1u32, 2, 0, 3];
    let cond = Condition::Class(&labels);
    let (mut out_a, mut var_a) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    m.predict_with_variance(&a, level, cond, &mut out_a, &mut var_a).unwrap();
    // another batch in between changes nothing of a's answer
    let (mut out_b, mut var_b) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    m.predict_with_variance(&b, level, cond, &mut out_b, &mut var_b).unwrap();
    m.predict(&b, level, Condition::Unconditional, &mut out_b).unwrap();
    let (mut again, mut var_again) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    m.predict_with_variance(&a, level, cond, &mut again, &mut var_again).unwrap();
    assert_eq!(var_a, var_again);
    assert_eq!(out_a, again);
    assert_ne!(var_a, var_b, "two batches, one variance");
    // the plain prediction is the mean part of the same forward pass
    let mut plain = vec![0.0f32; 8];
    m.predict(&a, level, cond, &mut plain).unwrap();
    assert_eq!(plain, out_a);
    // classifier-free guidance: the variance is the conditional call's, whatever came last
    let mut buf = vec![0.0f32; 8];
    let (mut g_out, mut g_var) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    {
        let mut guided = ClassifierFree::new(&mut m, 3.0, &mut buf).unwrap();
        guided.predict_with_variance(&a, level, cond, &mut g_out, &mut g_var).unwrap();
    }
    assert_eq!(g_var, var_a);
    let (mut u_out, mut u_var) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    m.predict_with_variance(&a, level, Condition::Unconditional, &mut u_out, &mut u_var).unwrap();
    assert_ne!(g_var, u_var, "the unconditional call's variance");
}
