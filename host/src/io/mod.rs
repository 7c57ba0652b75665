//! Files: atomic writes (a temporary file in the same folder, then a rename), CSV of rows,
//! one writer per output ([`lock`]).

pub mod lock;

use std::io::Write;
use std::path::Path;

use anyhow::Context;

pub use lock::OutputLock;

/// Flushes a directory's entries (after a rename into it) to the disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: a crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("output path has no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Rows of `dim` values as CSV (header `x0,x1,...`).
pub fn csv_rows(data: &[f32], dim: usize) -> Vec<u8> {
    let mut s = (0..dim).map(|d| format!("x{d}")).collect::<Vec<_>>().join(",");
    s.push('\n');
    for row in data.chunks_exact(dim) {
        s.push_str(&row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        s.push('\n');
    }
    s.into_bytes()
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`; unlimited where unknown).
pub fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(u64::MAX)
}

/// Refuses, before any work, a request for `floats` float32 values (`None`: the count
/// overflowed) that needs more memory than the machine has; `what` names the flags or file.
pub fn check_memory(what: &str, floats: Option<usize>) -> crate::error::Result<()> {
    let total = machine_memory();
    let gib = |b: f64| format!("{:.1} GiB", b / f64::from(1u32 << 30));
    match floats.and_then(|f| f.checked_mul(4)) {
        Some(b) if (b as u64) <= total => Ok(()),
        Some(b) => Err(crate::error::input(format!(
            "{what}: needs {} of memory, more than this machine's {}",
            gib(b as f64),
            gib(total as f64)
        ))),
        None => Err(crate::error::input(format!("{what}: the sizes overflow (more memory than any machine has)"))),
    }
}

/// The product of sizes, `None` if it overflows.
pub fn product(sizes: &[usize]) -> Option<usize> {
    sizes.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

/// Checks an output path for samples or data (`.npy` or `.csv`, in an existing folder, not a
/// folder) and takes its lock: called before any work starts.
pub fn sample_output(path: &Path, flag: &str) -> crate::error::Result<OutputLock> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy" | "csv") => OutputLock::file(path, flag),
        _ => Err(crate::error::input(format!("{flag} {}: expected a .npy or .csv file name", path.display()))),
    }
}

/// Writes `n x dim` rows as `.npy` (float32, shape `[n, ...shape]`) or `.csv`, by extension,
/// atomically.
/// Non-finite values are refused: nothing non-finite is written.
pub fn write_samples(path: &Path, data: &[f32], shape: &[usize]) -> crate::error::Result<()> {
    let dim: usize = shape.iter().product::<usize>().max(1);
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(crate::error::input(format!(
            "--out {}: not written: example {} holds a non-finite value (the input overflowed float32: \
             check the model, --init and --guidance)",
            path.display(),
            i / dim
        )));
    }
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => csv_rows(data, dim),
        Some("npy") => {
            use ndarray_npy::WriteNpyExt;
            let mut full = vec![data.len() / dim];
            full.extend_from_slice(shape);
            let arr = ndarray::ArrayD::from_shape_vec(full, data.to_vec()).map_err(anyhow::Error::from)?;
            let mut buf = Vec::new();
            arr.write_npy(&mut buf).map_err(anyhow::Error::from)?;
            buf
        }
        _ => return Err(crate::error::input(format!("--out {}: expected a .npy or .csv file name", path.display()))),
    };
    write_atomic(path, &bytes)?;
    Ok(())
}
