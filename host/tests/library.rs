//! The library API: a run built in code from typed options (no flag strings) is the run the
//! command line makes of the same settings, bit for bit; sampling and the bound are library
//! functions over any denoiser.

use assert_cmd::Command;
use elbo::kinds::{SamplerKind, SpacingKind};
use elbo::sampling::{SamplerOptions, sample};
use elbo::train::{Loss, TrainOptions};
use elbo_core::Condition;

#[test]
fn options_in_code_train_what_the_command_line_trains() {
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("cli");
    Command::cargo_bin("elbo")
        .unwrap()
        .args(["train", "--data", "two-moons", "--steps", "30", "--batch", "32", "--n-train", "300"])
        .args(["--width", "16", "--loss", "vlb", "--timesteps", "100", "--checkpoint-every", "30", "--out"])
        .arg(&cli)
        .assert()
        .success();
    let mut opts = TrainOptions {
        data: "two-moons".into(),
        steps: 30,
        batch: 32,
        n_train: 300,
        width: 16,
        loss: Some(Loss::Vlb),
        checkpoint_every: 30,
        ..TrainOptions::DEFAULT
    };
    opts.schedule.timesteps = 100;
    opts.validate().unwrap();
    let mut trainer = opts.trainer().unwrap();
    let lib = dir.path().join("lib");
    trainer.run(&lib, 50, |_, _, _| {}).unwrap();
    let read = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(read(&cli) == read(&lib), "the library's run differs from the command line's");

    // sampling as a library function, from the same x_T as `elbo sample --sampler NAME`
    let mut model = elbo::model::Trained::load(&lib).unwrap();
    let sched = model.schedule().unwrap();
    for (kind, name) in
        [(SamplerKind::Ddim, "ddim"), (SamplerKind::Dpmpp2m, "dpmpp2m"), (SamplerKind::Dpmpp3m, "dpmpp3m")]
    {
        let mut x = vec![0.0f32; 2 * 16];
        elbo::noise::starts(0, 0, 2, &mut x);
        let so = SamplerOptions {
            sampler: kind,
            steps: Some(10),
            spacing: SpacingKind::Trailing,
            ..SamplerOptions::default()
        };
        sample(&so, &mut model, sched.as_ref(), &mut x, Condition::Unconditional, &mut elbo::noise::sampler(0, 0))
            .unwrap();
        model.normalization.invert(&mut x);
        let out = dir.path().join(format!("{name}.npy"));
        Command::cargo_bin("elbo")
            .unwrap()
            .args(["sample", "--sampler", name, "--steps", "10", "--n", "16", "--model"])
            .arg(&lib)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let bytes = std::fs::read(&out).unwrap();
        let cli_x: Vec<f32> =
            bytes[128..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(cli_x, x, "{name}");
    }
}
