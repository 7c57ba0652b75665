//! Files: atomic writes (a temporary file in the same folder, then a rename), CSV of rows.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `bytes` to `path` atomically: a crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("output path has no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
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

/// Writes `n x dim` rows as `.npy` (float32, shape `[n, ...shape]`) or `.csv`, by extension,
/// atomically.
pub fn write_samples(path: &Path, data: &[f32], shape: &[usize]) -> crate::error::Result<()> {
    let dim: usize = shape.iter().product();
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
